mod play;
mod serve;
mod stat;
mod util;
