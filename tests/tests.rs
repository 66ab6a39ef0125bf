mod play;
mod serve;
mod util;
