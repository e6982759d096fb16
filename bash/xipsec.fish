# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_xipsec_global_optspecs
    string join \n socket= h/help V/version
end

function __fish_xipsec_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_xipsec_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_xipsec_using_subcommand
    set -l cmd (__fish_xipsec_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c xipsec -n "__fish_xipsec_needs_command" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_needs_command" -s V -l version -d 'Print version'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "sa" -d 'Security associations (SAs): how traffic is protected'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "sp" -d 'Security policies (SPs): which traffic is protected, passed in clear or dropped'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "batch" -d 'Apply adds and removes from a file of commands as one change: all or nothing'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "stats" -d 'Packets dropped by the datapath, per reason (per-SA and per-SP counters are in `list`)'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "status" -d 'What the daemon is serving: socket, state file, datapath, interfaces, number of SAs and SPs'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "daemon" -d 'Run the daemon: attach the datapath, restore the saved state and serve the CLI'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "completions" -d 'Print a shell completion script to standard output'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "add" -d 'The source document\'s `esxcli network ip ipsec add` (missing `sa`/`sp`): answered with a hint'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "remove" -d 'Everything after a misplaced `add`/`remove`/`list`, kept to pick the hint'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "list" -d 'Everything after a misplaced `add`/`remove`/`list`, kept to pick the hint'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "apply" -d 'Make the running SAs and SPs exactly those a file describes: the difference, as one change'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "export" -d 'Print the running configuration as an `apply` file (keys redacted unless --with-keys)'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "explain" -d 'What the kernel\'s classifier does with one packet, and why; beside the reference model\'s answer (a disagreement is a bug). Changes nothing: no counter, cache or state moves'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "generate" -d 'Write the man pages or the shell completions generated from these definitions (used by `cargo xtask dist`, so they always match the binary)'
complete -c xipsec -n "__fish_xipsec_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and not __fish_seen_subcommand_from list add remove reset-replay export help" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and not __fish_seen_subcommand_from list add remove reset-replay export help" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and not __fish_seen_subcommand_from list add remove reset-replay export help" -f -a "list" -d 'List every SA usable by policies, with counters (keys are never shown)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and not __fish_seen_subcommand_from list add remove reset-replay export help" -f -a "add" -d 'Add an SA. Every option is required, except --encryption-key with `null` encryption and the integrity options with AES-GCM (which refuses them)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and not __fish_seen_subcommand_from list add remove reset-replay export help" -f -a "remove" -d 'Remove an SA: by --sa-name, by --sa-source + --sa-destination + --sa-spi, or all of them with --remove-all. Fails if the SA is in use by an SP (remove the SP first)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and not __fish_seen_subcommand_from list add remove reset-replay export help" -f -a "reset-replay" -d 'Empty an inbound SA\'s anti-replay window, for a peer that restarted at sequence 1'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and not __fish_seen_subcommand_from list add remove reset-replay export help" -f -a "export" -d 'Write every SA with its keys as Wireshark\'s ESP SA table (`esp_sa`), for decrypting captures; root only, the file is created 0600'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and not __fish_seen_subcommand_from list add remove reset-replay export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from list" -l formatter -d 'Output format' -r -f -a "table\t'Aligned columns for people'
json\t'A JSON array of objects (see SCHEMA.md)'
xml\t'esxcli-style XML'
csv\t'Comma-separated values with a header line'
keyvalue\t'One `Type.field.type=value` line per field, records separated by a blank line'"
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from list" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s s -l sa-source -d 'Required. Source IPv6 address; `any` is allowed in transport mode only' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s d -l sa-destination -d 'Required. Destination IPv6 address; `any` is allowed in transport mode only' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s m -l sa-mode -d 'Required. `transport` or `tunnel`' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s p -l sa-spi -d 'Required. Security parameter index: `0x` and up to 8 hex digits, 0x100 or more (0-255 are reserved by RFC 4303); unique among SAs' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s e -l encryption-algorithm -d 'Required. ESXi\'s three: `3des-cbc`, `aes128-cbc` or `null`; and beyond ESXi (xipsec only): `aes256-cbc` (RFC 3602), `aes128-gcm` and `aes256-gcm` (AES-GCM, RFC 4106, 16-byte ICV: they authenticate by themselves and refuse --integrity-algorithm; see the RFC 4106 warning below)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s k -l encryption-key -d 'Required unless the algorithm is `null` (an error with `null`). `0x` and an even number of hex digits, or ASCII text; aes128-cbc takes 16 bytes, aes256-cbc 32, 3des-cbc 24 (K1≠K2, K2≠K3); aes128-gcm 20 and aes256-gcm 36: the AES key followed by a 4-byte salt (RFC 4106)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s i -l integrity-algorithm -d 'Required, except with aes128-gcm and aes256-gcm, which refuse it. `hmac-sha1` or `hmac-sha2-256` (integrity is never null; `sa list` shows `none` for AES-GCM)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s K -l integrity-key -d 'Required with --integrity-algorithm (refused with AES-GCM). `0x` hex or ASCII text; hmac-sha1 takes 20 bytes, hmac-sha2-256 32 bytes' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s n -l sa-name -d 'Required. Name of the SA; unique' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from remove" -s n -l sa-name -d 'Name of the SA to remove' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from remove" -s s -l sa-source -d 'Source address of the SA to remove (with --sa-destination and --sa-spi)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from remove" -s d -l sa-destination -d 'Destination address of the SA to remove (with --sa-source and --sa-spi)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from remove" -s p -l sa-spi -d 'SPI of the SA to remove (with --sa-source and --sa-destination)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from remove" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from remove" -l remove-all -d 'Remove every SA; atomic: if any SA is in use, nothing is removed'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from reset-replay" -s n -l sa-name -d 'Required. Name of the inbound SA whose window to empty' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from reset-replay" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from reset-replay" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from export" -l wireshark -d 'Write every SA with its keys as Wireshark\'s `esp_sa` table to FILE (created new, mode 0600; root only). Copy it as `esp_sa` into a Wireshark profile directory (for tshark, WIRESHARK_CONFIG_DIR=DIR) and turn on ESP decryption and ICV checking (tshark -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from export" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from help" -f -a "list" -d 'List every SA usable by policies, with counters (keys are never shown)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add an SA. Every option is required, except --encryption-key with `null` encryption and the integrity options with AES-GCM (which refuses them)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove an SA: by --sa-name, by --sa-source + --sa-destination + --sa-spi, or all of them with --remove-all. Fails if the SA is in use by an SP (remove the SP first)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from help" -f -a "reset-replay" -d 'Empty an inbound SA\'s anti-replay window, for a peer that restarted at sequence 1'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from help" -f -a "export" -d 'Write every SA with its keys as Wireshark\'s ESP SA table (`esp_sa`), for decrypting captures; root only, the file is created 0600'
complete -c xipsec -n "__fish_xipsec_using_subcommand sa; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and not __fish_seen_subcommand_from list add remove help" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and not __fish_seen_subcommand_from list add remove help" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and not __fish_seen_subcommand_from list add remove help" -f -a "list" -d 'List every SP, with hit counters'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and not __fish_seen_subcommand_from list add remove help" -f -a "add" -d 'Add an SP. Its SA must exist first'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and not __fish_seen_subcommand_from list add remove help" -f -a "remove" -d 'Remove an SP by --sp-name, or every SP with --remove-all'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and not __fish_seen_subcommand_from list add remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from list" -l formatter -d 'Output format' -r -f -a "table\t'Aligned columns for people'
json\t'A JSON array of objects (see SCHEMA.md)'
xml\t'esxcli-style XML'
csv\t'Comma-separated values with a header line'
keyvalue\t'One `Type.field.type=value` line per field, records separated by a blank line'"
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from list" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l sp-source -d 'Required. Source prefix `ADDR/LEN`, or `any` (= ::/0); no host bits beyond LEN' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l sp-destination -d 'Required. Destination prefix `ADDR/LEN`, or `any` (= ::/0); no host bits beyond LEN' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l source-port -d 'Required. 0-65535 or `any` (0 means any); must be any with protocol any or icmp6' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l destination-port -d 'Required. 0-65535 or `any` (0 means any); with icmp6 it is the ICMPv6 type; must be any with protocol any' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l upper-layer-protocol -d '`tcp`, `udp`, `icmp6` or `any` [default: any]' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l flow-direction -d 'Required. `in` or `out` (a flow in both directions needs two policies)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l action -d '`none` (pass in clear), `discard` (drop) or `ipsec` (protect with the SA) [default: ipsec]' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l sp-mode -d '`transport` or `tunnel`; defaults to the SA\'s mode, and must equal it if given' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l sa-name -d 'Name of the SA to use: required with action ipsec; optional otherwise, and must exist if given' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l sp-name -d 'Required. Name of the SP; unique' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l priority -d '0-65535 (extension). Policies with a priority rank before all others, lower first; the rest rank by specificity, then age' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from remove" -l sp-name -d 'Name of the SP to remove' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from remove" -l sa-name -d 'Not an option of `sp remove` (the source document\'s typo): answered with a hint' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from remove" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from remove" -l remove-all -d 'Remove every SP'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from help" -f -a "list" -d 'List every SP, with hit counters'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add an SP. Its SA must exist first'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove an SP by --sp-name, or every SP with --remove-all'
complete -c xipsec -n "__fish_xipsec_using_subcommand sp; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c xipsec -n "__fish_xipsec_using_subcommand batch" -l expect-generation -d 'Refuse the batch, changing nothing, unless the configuration is at generation N (see `xipsec status`)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand batch" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand batch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand stats" -l formatter -d 'Output format' -r -f -a "table\t'Aligned columns for people'
json\t'A JSON array of objects (see SCHEMA.md)'
xml\t'esxcli-style XML'
csv\t'Comma-separated values with a header line'
keyvalue\t'One `Type.field.type=value` line per field, records separated by a blank line'"
complete -c xipsec -n "__fish_xipsec_using_subcommand stats" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand stats" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand status" -l formatter -d 'Output format' -r -f -a "table\t'Aligned columns for people'
json\t'A JSON array of objects (see SCHEMA.md)'
xml\t'esxcli-style XML'
csv\t'Comma-separated values with a header line'
keyvalue\t'One `Type.field.type=value` line per field, records separated by a blank line'"
complete -c xipsec -n "__fish_xipsec_using_subcommand status" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l interface -d 'Interface to attach the datapath to (XDP ingress, TC egress); repeat for several' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l xdp-mode -d 'How XDP is attached' -r -f -a "auto\t'Native (driver) mode where the driver supports it, generic (skb) mode otherwise'
native\t'Driver mode only; attaching fails on drivers without XDP support'
generic\t'Generic (skb) mode: works everywhere, slower'"
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l state-dir -d 'Directory of the persisted state (state.json, mode 0600)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l pin-dir -d 'bpffs directory where programs and maps are pinned' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l esp-rx-coalesce-us -d 'Receive coalescing of the ESP engine, in microseconds: while a stream of ESP arrives, wait this long between rounds so each handles more packets (fewer wake-ups and TCP ACKs, a little more latency); 0 disables' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l tdes-block-limit -d 'Volume limit of 3DES SAs, in 64-bit blocks per SA and direction: past it the SA stops protecting and accepting traffic (dropped and counted as esp_volume_limit) and must be replaced. 3DES\'s 64-bit blocks leak plaintext near 2^32 blocks under one key (Sweet32); the default is 2^30 (8 GiB). May only be lowered. RFC 8221 discourages 3DES (SHOULD NOT): prefer aes128-cbc' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l control-group -d 'Also serve members of GROUP (primary or supplementary) on the control socket; root is always served, anyone else is refused. The socket file is created 0600: give the group access to it (and its directory) as well' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l metrics-listen -d 'Serve Prometheus metrics (`GET /metrics`, text format 0.0.4) on ADDR:PORT, e.g. 127.0.0.1:9611. Off by default. Only loopback addresses unless --metrics-allow-remote: the endpoint has no authentication' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l metrics-max-sps -d 'Per-SP series only for the first N SPs (creation order); the others are summed into xipsec_sp_other_packets_total and xipsec_sp_other_bytes_total' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l esp-tx -d 'How the ESP engine sends ESP: `xdp` through the AF_XDP sockets it receives on (its own Ethernet and IPv6 headers, next hop from the kernel\'s neighbour table; no qdisc, TC egress or packet taps on the sending interface), falling back to the raw socket per packet when the neighbour is unknown or the packet needs fragmenting; `raw` always through the raw socket (the kernel\'s IPv6 output: visible to tcpdump on this host)' -r -f -a "xdp\t'AF_XDP transmit rings where possible, the raw socket otherwise'
raw\t'The raw socket only'"
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l no-datapath -d 'Manage and persist state only; attach nothing (tests and staging). --interface is then optional'
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -l metrics-allow-remote -d 'Allow --metrics-listen on a non-loopback address (put a firewall or a proxy in front)'
complete -c xipsec -n "__fish_xipsec_using_subcommand daemon" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand completions" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand completions" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand add" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand add" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand remove" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand remove" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand list" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand list" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand apply" -l expect-generation -d 'Refuse, changing nothing, unless the configuration is still at generation N (the one a --dry-run printed)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand apply" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand apply" -l dry-run -d 'Print the difference and change nothing'
complete -c xipsec -n "__fish_xipsec_using_subcommand apply" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand export" -l with-keys -d 'Write the configuration with its keys to FILE (created new, mode 0600; root only) instead of printing it with the keys redacted' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand export" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand explain" -l direction -d '`in` (XDP ingress\'s view) or `out` (TC egress\'s view)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand explain" -l source -d 'Source IPv6 address of the packet' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand explain" -l destination -d 'Destination IPv6 address of the packet' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand explain" -l protocol -d 'tcp (default), udp, icmp6 or a protocol number' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand explain" -l source-port -d 'TCP or UDP source port (default 0)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand explain" -l destination-port -d 'TCP or UDP destination port (default 0), or the ICMPv6 type with icmp6 (default 128)' -r
complete -c xipsec -n "__fish_xipsec_using_subcommand explain" -l formatter -d 'Output format' -r -f -a "table\t'Aligned columns for people'
json\t'A JSON array of objects (see SCHEMA.md)'
xml\t'esxcli-style XML'
csv\t'Comma-separated values with a header line'
keyvalue\t'One `Type.field.type=value` line per field, records separated by a blank line'"
complete -c xipsec -n "__fish_xipsec_using_subcommand explain" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "man" -d 'Man pages into DIR: xipsec.8 and one per subcommand'
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "completions" -d 'bash, zsh and fish completion scripts into DIR'
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and __fish_seen_subcommand_from man" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and __fish_seen_subcommand_from man" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and __fish_seen_subcommand_from completions" -l socket -d 'Control socket of the daemon to talk to (for `daemon`: the socket to serve)' -r -F
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and __fish_seen_subcommand_from completions" -s h -l help -d 'Print help'
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "man" -d 'Man pages into DIR: xipsec.8 and one per subcommand'
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "completions" -d 'bash, zsh and fish completion scripts into DIR'
complete -c xipsec -n "__fish_xipsec_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "sa" -d 'Security associations (SAs): how traffic is protected'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "sp" -d 'Security policies (SPs): which traffic is protected, passed in clear or dropped'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "batch" -d 'Apply adds and removes from a file of commands as one change: all or nothing'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "stats" -d 'Packets dropped by the datapath, per reason (per-SA and per-SP counters are in `list`)'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "status" -d 'What the daemon is serving: socket, state file, datapath, interfaces, number of SAs and SPs'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "daemon" -d 'Run the daemon: attach the datapath, restore the saved state and serve the CLI'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "completions" -d 'Print a shell completion script to standard output'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "add" -d 'The source document\'s `esxcli network ip ipsec add` (missing `sa`/`sp`): answered with a hint'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "remove" -d 'Everything after a misplaced `add`/`remove`/`list`, kept to pick the hint'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "list" -d 'Everything after a misplaced `add`/`remove`/`list`, kept to pick the hint'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "apply" -d 'Make the running SAs and SPs exactly those a file describes: the difference, as one change'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "export" -d 'Print the running configuration as an `apply` file (keys redacted unless --with-keys)'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "explain" -d 'What the kernel\'s classifier does with one packet, and why; beside the reference model\'s answer (a disagreement is a bug). Changes nothing: no counter, cache or state moves'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "generate" -d 'Write the man pages or the shell completions generated from these definitions (used by `cargo xtask dist`, so they always match the binary)'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and not __fish_seen_subcommand_from sa sp batch stats status daemon completions add remove list apply export explain generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from sa" -f -a "list" -d 'List every SA usable by policies, with counters (keys are never shown)'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from sa" -f -a "add" -d 'Add an SA. Every option is required, except --encryption-key with `null` encryption and the integrity options with AES-GCM (which refuses them)'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from sa" -f -a "remove" -d 'Remove an SA: by --sa-name, by --sa-source + --sa-destination + --sa-spi, or all of them with --remove-all. Fails if the SA is in use by an SP (remove the SP first)'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from sa" -f -a "reset-replay" -d 'Empty an inbound SA\'s anti-replay window, for a peer that restarted at sequence 1'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from sa" -f -a "export" -d 'Write every SA with its keys as Wireshark\'s ESP SA table (`esp_sa`), for decrypting captures; root only, the file is created 0600'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from sp" -f -a "list" -d 'List every SP, with hit counters'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from sp" -f -a "add" -d 'Add an SP. Its SA must exist first'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from sp" -f -a "remove" -d 'Remove an SP by --sp-name, or every SP with --remove-all'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "man" -d 'Man pages into DIR: xipsec.8 and one per subcommand'
complete -c xipsec -n "__fish_xipsec_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "completions" -d 'bash, zsh and fish completion scripts into DIR'
