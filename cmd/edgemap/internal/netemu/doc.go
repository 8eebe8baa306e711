// Package netemu emulates a small IPv4 network with per-pair delays in user
// space, for end-to-end tests and benchmarks that need real sockets, real
// addresses and real round-trip times without leaving the machine. A
// Network and its Hosts are safe for concurrent use.
//
// # Basics
//
// Each Host is a network namespace (`ip netns add em<pid>-<net>-<host>`)
// whose only link besides lo is a TUN device named tun0. The device is
// created by this process from inside the namespace, so nothing of the
// emulation is ever visible in the root namespace, and the process keeps its
// file descriptor. The host's addresses are assigned to tun0 as /32s, and a
// route sends all of 198.18.0.0/15 (the benchmarking range of RFC 2544) to
// tun0, so every packet a host sends to another host is read by this process.
//
// The forwarder runs in the same process: one goroutine per host reads its
// TUN, finds the destination host by the longest owned prefix, and hands a
// copy of the packet to the queue of that (source, destination) pair. One
// goroutine per pair holds each packet until its delay has passed and writes
// it to the destination's TUN, where the kernel receives it as if from a
// wire. SetDelay and SetLinkDown take effect on the next packet.
//
// Tests reach into a host with Host.Do, which runs a function on an OS thread
// switched into the host's namespace; sockets made there stay in it:
//
//	n, err := netemu.New("resolver")
//	if err != nil { ... }
//	defer n.Close()
//	client, _ := n.AddHost("client", netip.MustParsePrefix("198.18.1.10/24"))
//	server, _ := n.AddHost("server", netip.MustParsePrefix("198.18.2.10/24"))
//	n.SetDelay(client, server, 20*time.Millisecond) // 40 ms round trip
//
//	var ln net.Listener
//	server.Do(func() (err error) { ln, err = net.Listen("tcp", "198.18.2.10:53"); return err })
//	go serve(ln)
//	client.Do(func() error {
//		c, err := net.Dial("tcp", "198.18.2.10:53") // takes ~40 ms
//		...
//	})
//
// Programs run inside a host with Host.Command (`ip netns exec`).
//
// Why not netem: the kernel this project runs its tests on has no sch_netem
// and few other qdiscs, and veth pairs with tc would need both anyway. A TUN
// device exists on every Linux with /dev/net/tun, and a forwarder in Go can
// be changed and counted from the test itself.
//
// # Caveats
//
//   - IPv4 only. IPv6 is turned off on tun0; IPv6 packets are dropped and
//     counted in Stats.NotIPv4.
//   - Delay only: no bandwidth limit, jitter, loss rate or reordering. Each
//     direction of each pair is a FIFO queue of up to queueLen packets.
//   - Packets arrive late by the forwarder's own cost: two TUN system calls,
//     a goroutine hand-off and the timer's wake-up, in all about 0.1 to 0.5
//     ms per direction on an idle 2-core machine (a TCP connect with 15 ms
//     one way takes 31 ms), more on a busy one. Plan assertions with margin.
//   - One TCP stream gets about 1 Gbit/s through the forwarder on such a
//     machine (BenchmarkTCP). Under bulk load the kernel's per-TUN queue
//     (1000 packets) overflows before the forwarder's; `ip -s link` inside
//     the host shows those drops, Stats does not.
//   - Needs root, iproute2 and /dev/net/tun; Available says which is
//     missing.
//   - Namespaces outlive a killed process (they are mounts under
//     /var/run/netns). New deletes those left by an earlier process with the
//     same pid and network name; others need `ip netns del`.
//   - All addresses must lie in 198.18.0.0/15, and a host reaches nothing
//     outside the network, so traffic cannot leave the emulation.
package netemu
