package netemu

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Inside every host's namespace the TUN device has this name, the MTU
// tunMTU and a transmit queue of tunTxQueue packets (the kernel's default is
// 500; a larger one loses fewer packets to bursts while the forwarder is
// descheduled, at the cost of up to tunTxQueue*MTU bytes of kernel memory).
const (
	tunName    = "tun0"
	tunMTU     = 1500
	tunTxQueue = 1000
)

// Host is one emulated machine: a network namespace whose only link is a TUN
// device read and written by the forwarder. Its methods are safe for
// concurrent use.
type Host struct {
	net      *Network
	name     string
	ns       string         // namespace name under /var/run/netns
	idx      int            // index in Network.hosts and in other hosts' out
	prefixes []netip.Prefix // as given to AddHost
	tun      *os.File       // non-blocking, so reads go through the poller

	down atomic.Bool
	// out holds the queues of packets from this host, indexed by destination
	// Host.idx, nil where no packet has gone yet. Replaced whole under
	// Network.mu; read without it on every packet.
	out atomic.Pointer[[]*pair]
}

// AddHost creates a host that owns the given prefixes: each address (such as
// 198.18.1.10 in 198.18.1.10/24) is assigned to the host's TUN device, and
// packets to any address in the prefix (198.18.1.0/24) are delivered to the
// host, the longest matching prefix among all hosts winning. Every address
// must lie inside 198.18.0.0/15; the first is the host's source address.
func (n *Network) AddHost(name string, addrs ...netip.Prefix) (*Host, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("%w: host %q", ErrBadName, name)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: host %q has no address", ErrBadAddr, name)
	}
	for _, p := range addrs {
		if !p.IsValid() || !p.Addr().Is4() || !addrRange.Contains(p.Addr()) || p.Bits() < addrRange.Bits() {
			return nil, fmt.Errorf("%w: %s is not an IPv4 prefix inside %s", ErrBadAddr, p, addrRange)
		}
	}

	n.addMu.Lock()
	defer n.addMu.Unlock()
	n.mu.Lock()
	closed, hosts := n.closed, n.hosts
	n.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	for _, o := range hosts {
		if o.name == name {
			return nil, fmt.Errorf("%w: host %q", ErrNameInUse, name)
		}
		for _, op := range o.prefixes {
			for _, p := range addrs {
				if op.Addr() == p.Addr() || op.Masked() == p.Masked() {
					return nil, fmt.Errorf("%w: %s overlaps %s of host %q", ErrBadAddr, p, op, o.name)
				}
			}
		}
	}

	h := &Host{
		net:      n,
		name:     name,
		ns:       n.prefix + name,
		idx:      len(hosts),
		prefixes: slices.Clone(addrs),
	}
	h.out.Store(new([]*pair))
	if err := h.create(); err != nil {
		return nil, err
	}

	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.routes.Store(buildRoutes(n.hosts))
	n.wg.Add(1)
	n.mu.Unlock()
	go n.read(h)
	return h, nil
}

// create makes the namespace and the configured TUN device, undoing both if
// any step fails.
func (h *Host) create() (err error) {
	live.mu.Lock()
	if _, inUse := live.ns[h.ns]; inUse {
		live.mu.Unlock()
		return fmt.Errorf("%w: namespace %s", ErrNameInUse, h.ns)
	}
	live.ns[h.ns] = struct{}{}
	live.mu.Unlock()
	defer func() {
		if err == nil {
			return
		}
		if h.tun != nil {
			h.tun.Close()
		}
		// The namespace may not exist if "netns add" failed: ignore errors.
		_ = ipCmd("", nil, "netns", "del", h.ns)
		live.mu.Lock()
		delete(live.ns, h.ns)
		live.mu.Unlock()
	}()

	if err := ipCmd("", nil, "netns", "add", h.ns); err != nil {
		return err
	}
	// The device is created inside the namespace rather than in the root
	// namespace and then moved: nothing of the emulation ever appears in the
	// root namespace, and device names need not be unique across hosts.
	if err := h.Do(func() error {
		f, err := openTUN(tunName)
		h.tun = f
		return err
	}); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "link set dev lo up\n")
	fmt.Fprintf(&b, "link set dev %s mtu %d txqueuelen %d up\n", tunName, tunMTU, tunTxQueue)
	for _, p := range h.prefixes {
		fmt.Fprintf(&b, "address add %s/32 dev %s\n", p.Addr(), tunName)
	}
	fmt.Fprintf(&b, "route add %s dev %s src %s\n", addrRange, tunName, h.Addr())
	return ipCmd(h.ns, strings.NewReader(b.String()), "-batch", "-")
}

// openTUN creates a TUN device (IP packets, no packet-information header) in
// the calling thread's namespace and returns it as a non-blocking file.
// IPv6 is turned off on it so the kernel does not send router solicitations
// and MLD reports the forwarder would only drop.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netemu: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netemu: tun %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netemu: TUNSETIFF %s: %w", name, err)
	}
	// /proc/sys/net resolves to the namespace of the thread that opens it.
	err = os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6"), []byte("1"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // no IPv6 in this kernel
		unix.Close(fd)
		return nil, fmt.Errorf("netemu: disable IPv6 on %s: %w", name, err)
	}
	// A non-blocking fd makes os.NewFile register it with the poller, so
	// Close wakes a blocked Read.
	return os.NewFile(uintptr(fd), name), nil
}

// Name returns the name given to AddHost.
func (h *Host) Name() string { return h.name }

// NetnsPath returns the path of the host's namespace, for setns(2) or
// `nsenter --net=`.
func (h *Host) NetnsPath() string { return filepath.Join(netnsDir, h.ns) }

// Addr returns the host's first address, its source address.
func (h *Host) Addr() netip.Addr { return h.prefixes[0].Addr() }

// Do runs fn on an OS thread switched into the host's namespace. Sockets fn
// creates belong to the host and stay there when used from other goroutines
// later, so a test opens listeners and dials from a host this way. Goroutines
// fn starts run in the test process's own namespace, and so does name
// resolution that runs on other threads: dial IP literals.
func (h *Host) Do(fn func() error) error {
	runtime.LockOSThread()
	// Until the thread is back in its namespace it must not run other
	// goroutines; if switching back fails it stays locked, and the runtime
	// ends the thread when this goroutine exits instead of reusing it.
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netemu: open own namespace: %w", err)
	}
	defer unix.Close(orig)
	target, err := unix.Open(h.NetnsPath(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netemu: open namespace of %s: %w", h.name, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netemu: enter namespace of %s: %w", h.name, err)
	}
	defer func() {
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			return // leave the thread locked: see above
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// Command returns a command that runs name inside the host's namespace
// through `ip netns exec`.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
}

func (h *Host) pairTo(dst *Host) *pair {
	if out := *h.out.Load(); dst.idx < len(out) {
		return out[dst.idx]
	}
	return nil
}
