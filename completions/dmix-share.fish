complete -c dmix-share -s D -l device -d 'The server to split' -r
complete -c dmix-share -l generate -d 'Print a man page or a shell completion script (man, bash, zsh, fish) and exit' -r
complete -c dmix-share -l exclusive -d 'A channel belongs to one client at a time: a second client asking for a held channel is refused as busy. Exclusive sub-devices may not overlap'
complete -c dmix-share -s q -l quiet -d 'Print nothing but errors'
complete -c dmix-share -s h -l help -d 'Print help'
complete -c dmix-share -s V -l version -d 'Print version'
