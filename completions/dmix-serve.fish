complete -c dmix-serve -l sink -d 'Where the mix goes: alsa:PCM (an ALSA device), wav:PATH (a WAV file), or null. Give it more than once for a preference list of devices (up to 8): the first that opens plays; when it is lost the next that opens takes over, and when a preferred one comes back the server moves back to it' -r
complete -c dmix-serve -l on-sink-loss -d 'When the sink\'s device goes away (unplugged, lost on resume): wait (keep the clients, run on by the clock, reopen it or a fallback) or exit (code 9, clients told). Given explicitly, wait also starts the server when no sink opens yet [default: wait, but a sink that cannot be opened at the start is an error]' -r -f -a "wait\t''
exit\t''"
complete -c dmix-serve -s r -l rate -d 'Sample rate in Hz' -r
complete -c dmix-serve -s c -l channels -d 'Channels' -r
complete -c dmix-serve -s f -l format -d 'Device sample format: S16_LE, S32_LE or FLOAT_LE' -r
complete -c dmix-serve -l period -d 'Frames per period: the unit the server takes out of the ring and plays' -r
complete -c dmix-serve -l buffer -d 'Frames in the mix ring: how far ahead of the server clients may write at most. A deep ring adds no latency: each client picks its own within it (dmix-play --latency), and the server takes each period only when the device has room for it. Rounded up to whole periods, with a note [default: 1 s in whole periods, at least 4 periods]' -r
complete -c dmix-serve -l device-buffer -d 'Frames of buffer to ask of an ALSA sink (the device may round it): the latency the device adds after the mix, and how late the period thread may run before the device underruns. At least 2 periods [default: 4 periods]' -r
complete -c dmix-serve -s n -l name -d 'Server name: clients find it with -D NAME' -r
complete -c dmix-serve -l socket -d 'Listen on this socket path instead of the runtime directory' -r -F
complete -c dmix-serve -l wait-clients -d 'Hold the first period until N players have written their first frame (a client that only opens the server, as a device probe does, is no player)' -r
complete -c dmix-serve -l capture -d 'Share an input among any number of readers (dmix-tee --source capture): alsa:PCM (an ALSA capture device) or wav:PATH (a file, read once at the server\'s pace)' -r
complete -c dmix-serve -l wait-readers -d 'Hold the capture until N readers are connected (with --freewheel, at least one)' -r
complete -c dmix-serve -l group -d 'Also admit users in GROUP (a name or gid): the socket becomes mode 0660 in that group. Use --socket in a directory the group can reach; the default runtime directory is private to you' -r
complete -c dmix-serve -l rt-priority -d 'Real-time priority (SCHED_FIFO, 1-99) of the period thread when paced; 0: ordinary scheduling. Needs root, CAP_SYS_NICE or an rtprio limit (limits.conf: @audio - rtprio 95); without, the server says so once and runs at ordinary priority' -r
complete -c dmix-serve -l generate -d 'Print a man page or a shell completion script (man, bash, zsh, fish) and exit' -r
complete -c dmix-serve -l freewheel -d 'Do not run in real time: advance as soon as every playing client has supplied the period (exact offline renders)'
complete -c dmix-serve -l exit-when-idle -d 'Exit (finalizing the sink) once a player has written a frame and every player has left (one that never wrote still holds the server while it is connected)'
complete -c dmix-serve -l restore -d 'Give clients the volumes remembered for their names (dmix-stat --volume NAME=DB), and the master its remembered volume. The default when paced; a --freewheel server restores nothing without it, so that scripted renders stay exact'
complete -c dmix-serve -l no-restore -d 'Restore no remembered volume (they are still kept, and changes by name remembered)'
complete -c dmix-serve -s q -l quiet -d 'Print nothing but errors'
complete -c dmix-serve -s h -l help -d 'Print help'
complete -c dmix-serve -s V -l version -d 'Print version'
