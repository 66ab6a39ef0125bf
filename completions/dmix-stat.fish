complete -c dmix-stat -s D -l device -d 'Server name or socket path' -r
complete -c dmix-stat -l interval -d 'Redraw interval for --watch, in milliseconds' -r
complete -c dmix-stat -l wait -d 'Wait up to SECONDS for the server to answer; exit 0 as soon as it does (with nothing else asked, print nothing), non-zero on timeout. For scripts, instead of sleeps' -r
complete -c dmix-stat -l volume -d 'Set a volume: TARGET=DB (absolute, at most +12), TARGET=DB+ or TARGET=DB- (a change, as amixer writes it: 3+, 1.5-). TARGET is a client id from the table, pid:N, a client name (every client of that name, now and later: remembered) or master (the mix). Prints the new state in one line' -r
complete -c dmix-stat -l mute -d 'Mute (on, the default), unmute (off) or toggle TARGET, as --volume names it; the volume is kept for unmuting. Prints the new state in one line' -r
complete -c dmix-stat -l forget -d 'Forget the volume remembered for the client name NAME' -r
complete -c dmix-stat -l sink -d 'Move the running server to another sink (alsa:PCM, wav:PATH, null), without stopping any client; it becomes the server\'s first preference. If it will not open, the old one plays on and the error is one line. A relative WAV path is taken from the current directory. See dmix-serve(1), SINKS' -r
complete -c dmix-stat -l generate -d 'Print a man page or a shell completion script (man, bash, zsh, fish) and exit' -r
complete -c dmix-stat -l json -d 'Print JSON: one object, or one per line with --watch'
complete -c dmix-stat -s w -l watch -d 'Redraw live as a mixer: the table, then the master and each player with its volume and level meters. Up and Down (or k, j) select a row; Left and Right (or -, + and =, or h, l) turn its volume down or up by 1 dB; m mutes or unmutes it; q, Esc or Ctrl-C quits'
complete -c dmix-stat -s l -l list -d 'List the servers in the runtime directory and whether they answer'
complete -c dmix-stat -s h -l help -d 'Print help'
complete -c dmix-stat -s V -l version -d 'Print version'
