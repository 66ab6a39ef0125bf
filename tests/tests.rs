mod generated;
mod play;
mod serve;
mod stat;
mod tee;
mod util;
