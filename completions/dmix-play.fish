complete -c dmix-play -s D -l device -d 'Server name or socket path' -r
complete -c dmix-play -s t -l file-type -d 'Input type: "raw" for headerless PCM (described by -f, -r, -c); by default the type is detected from the contents' -r
complete -c dmix-play -s f -l format -d 'Raw sample format: S16_LE, S32_LE or FLOAT_LE [default: S16_LE]' -r
complete -c dmix-play -s r -l rate -d 'Raw sample rate in Hz [default: 48000]' -r
complete -c dmix-play -s c -l channels -d 'Raw channel count [default: 2]' -r
complete -c dmix-play -l volume -d 'Start at this volume in dB, at most +12 (0 plays the samples unchanged); dmix-stat shows it and can change it while playing. Without it: what the server remembers for the --name (dmix-stat --volume NAME=DB), else 0 dB' -r
complete -c dmix-play -l name -d 'Name shown by dmix-stat [default: dmix-play]' -r
complete -c dmix-play -l latency -d 'How far ahead of the server to write, in ms (rounded up to whole server periods, at most the server\'s buffer); an ALSA sink\'s device buffer (dmix-stat) comes on top. Higher wakes the player less often and rides out longer stalls; a stop (Ctrl-C) is silent at once whatever it is. At the end, dmix-play exits once its last frame was heard. [default: 200 ms; in freewheel, the whole buffer]' -r
complete -c dmix-play -l generate -d 'Print a man page or a shell completion script (man, bash, zsh, fish) and exit' -r
complete -c dmix-play -l strict -d 'Stop at the first file that cannot be played instead of playing the rest'
complete -c dmix-play -s q -l quiet -d 'No progress bar'
complete -c dmix-play -s h -l help -d 'Print help'
complete -c dmix-play -s V -l version -d 'Print version'
