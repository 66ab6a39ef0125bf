complete -c dmix-tee -s D -l device -d 'Server name or socket path' -r
complete -c dmix-tee -s d -l duration -d 'Stop after SECONDS' -r
complete -c dmix-tee -s f -l format -d 'Sample format written: S16_LE, S32_LE or FLOAT_LE [default: the server\'s]' -r
complete -c dmix-tee -s t -l file-type -d 'Output type: wav or raw, for every output (on stdout and into a FIFO the WAV header is one of unknown length, as arecord writes to a pipe)' -r
complete -c dmix-tee -s s -l source -d 'What to record: monitor (what the server plays, after mixing) or capture (the input the server shares, see dmix-serve --capture)' -r
complete -c dmix-tee -l name -d 'Name shown by dmix-stat' -r
complete -c dmix-tee -l generate -d 'Print a man page or a shell completion script (man, bash, zsh, fish) and exit' -r
complete -c dmix-tee -s q -l quiet -d 'No warnings about lost frames, and no news of a FIFO\'s reader'
complete -c dmix-tee -s h -l help -d 'Print help'
complete -c dmix-tee -s V -l version -d 'Print version'
