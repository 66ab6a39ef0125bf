mod capture;
mod generated;
mod play;
mod serve;
mod share;
mod stat;
mod tee;
mod util;
