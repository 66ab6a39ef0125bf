mod play;
mod util;
