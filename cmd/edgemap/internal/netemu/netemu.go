package netemu

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by this package. Failures of the ip tool or of a system
// call are wrapped with %w and a short context instead.
var (
	// ErrClosed is returned by AddHost after Network.Close.
	ErrClosed = errors.New("netemu: network closed")
	// ErrBadName is returned by New and AddHost for an empty name or one with
	// characters other than letters, digits, '_' and '.' (names become
	// file names under /var/run/netns; '-' separates their parts).
	ErrBadName = errors.New("netemu: bad name")
	// ErrNameInUse is returned by New for a network name that is already open
	// in this process, and by AddHost for a host name already in the network.
	ErrNameInUse = errors.New("netemu: name in use")
	// ErrBadAddr is returned by AddHost when no address is given, or one is
	// not IPv4, is not inside 198.18.0.0/15, or is already owned by another
	// host.
	ErrBadAddr = errors.New("netemu: bad address")
)

// addrRange, 198.18.0.0/15, is the only range hosts may be given addresses
// in, and the one route every host has: the benchmarking range of RFC 2544,
// which is never routed on the Internet. Keeping every address inside it means a mistake in
// a test cannot send a packet anywhere but another emulated host.
var addrRange = netip.MustParsePrefix("198.18.0.0/15")

// netnsDir is where `ip netns add` mounts the namespaces it names.
const netnsDir = "/var/run/netns"

var validName = regexp.MustCompile(`^[A-Za-z0-9_.]+$`)

// live records every namespace name this process has created and not yet
// deleted, so that New's clean-up of stale namespaces never deletes one that
// is in use by another Network of this process.
var live struct {
	mu   sync.Mutex
	nets map[string]bool     // guarded by mu: open Network names
	ns   map[string]struct{} // guarded by mu: namespace names in use
}

// Network is a set of emulated hosts joined by the forwarder in this process.
// Its methods are safe for concurrent use.
type Network struct {
	name   string
	prefix string // "em<pid>-<name>-": every namespace name starts with it

	done chan struct{} // closed by Close: stops readers and queues
	wg   sync.WaitGroup

	addMu sync.Mutex // serialises AddHost and Close; held across ip execs

	mu     sync.Mutex                // guards the fields below
	hosts  []*Host                   // index is Host.idx
	delays map[pairKey]time.Duration // one-way delay; missing means 0
	closed bool

	routes atomic.Pointer[[]route] // longest prefix first; replaced whole by AddHost
	stats  counters
}

// Stats counts packets the forwarder has handled since New.
type Stats struct {
	Forwarded uint64 // packets written to a destination host
	Dropped   uint64 // sum of the counts below

	NotIPv4   uint64 // IPv6 or unparseable packets
	NoRoute   uint64 // destination inside no host's prefix
	LinkDown  uint64 // source or destination down when read or when due
	QueueFull uint64 // the pair's queue held queueLen packets already
	WriteFail uint64 // writing to the destination TUN failed
}

type counters struct {
	forwarded, notIPv4, noRoute, linkDown, queueFull, writeFail atomic.Uint64
}

// New returns an empty network whose namespaces are named
// "em<pid>-<name>-<host>". Namespaces left with that prefix by a crashed
// earlier process that had the same pid are deleted. The caller must Close it.
func New(name string) (*Network, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("%w: network %q", ErrBadName, name)
	}
	n := &Network{
		name:   name,
		prefix: fmt.Sprintf("em%d-%s-", os.Getpid(), name),
		done:   make(chan struct{}),
		delays: make(map[pairKey]time.Duration),
	}
	n.routes.Store(new([]route))

	live.mu.Lock()
	defer live.mu.Unlock()
	if live.nets[name] {
		return nil, fmt.Errorf("%w: network %q", ErrNameInUse, name)
	}
	if err := deleteStale(n.prefix); err != nil {
		return nil, err
	}
	if live.nets == nil {
		live.nets = make(map[string]bool)
		live.ns = make(map[string]struct{})
	}
	live.nets[name] = true
	return n, nil
}

// deleteStale deletes namespaces whose names start with prefix and that this
// process is not using. The caller holds live.mu.
func deleteStale(prefix string) error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netemu: list namespaces: %w", err)
	}
	for _, e := range entries {
		ns := e.Name()
		if _, inUse := live.ns[ns]; inUse || !strings.HasPrefix(ns, prefix) {
			continue
		}
		if err := ipCmd("", nil, "netns", "del", ns); err != nil {
			return fmt.Errorf("netemu: delete stale namespace: %w", err)
		}
	}
	return nil
}

// SetDelay sets the one-way delay of packets from a to b and from b to a.
// It applies to packets read after the call; packets already queued keep
// theirs and, to stay in order, packets behind them wait for them. A
// negative delay counts as 0, the default.
func (n *Network) SetDelay(a, b *Host, oneWay time.Duration) {
	n.mustOwn(a)
	n.mustOwn(b)
	oneWay = max(oneWay, 0)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.delays[keyOf(a, b)] = oneWay
	for _, p := range [...]*pair{a.pairTo(b), b.pairTo(a)} {
		if p != nil {
			p.delay.Store(int64(oneWay))
		}
	}
}

// SetLinkDown drops every packet to or from h while down is true, including
// packets already queued when they fall due.
func (n *Network) SetLinkDown(h *Host, down bool) {
	n.mustOwn(h)
	h.down.Store(down)
}

func (n *Network) mustOwn(h *Host) {
	if h == nil || h.net != n {
		panic("netemu: host belongs to another network")
	}
}

// Stats returns the forwarder's counters.
func (n *Network) Stats() Stats {
	c := &n.stats
	s := Stats{
		Forwarded: c.forwarded.Load(),
		NotIPv4:   c.notIPv4.Load(),
		NoRoute:   c.noRoute.Load(),
		LinkDown:  c.linkDown.Load(),
		QueueFull: c.queueFull.Load(),
		WriteFail: c.writeFail.Load(),
	}
	s.Dropped = s.NotIPv4 + s.NoRoute + s.LinkDown + s.QueueFull + s.WriteFail
	return s
}

// Close stops forwarding, closes the TUN devices and deletes the hosts'
// namespaces. Sockets that tests opened inside a host keep working on their
// own (the kernel keeps a namespace while anything refers to it) but reach
// nothing. Close is idempotent: later calls return nil.
func (n *Network) Close() error {
	n.addMu.Lock()
	defer n.addMu.Unlock()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	hosts := n.hosts
	n.mu.Unlock()

	close(n.done)
	var errs []error
	for _, h := range hosts {
		// Closing the file wakes its reader through the poller.
		if err := h.tun.Close(); err != nil {
			errs = append(errs, fmt.Errorf("netemu: close %s: %w", h.name, err))
		}
	}
	n.wg.Wait()

	live.mu.Lock()
	defer live.mu.Unlock()
	for _, h := range hosts {
		if err := ipCmd("", nil, "netns", "del", h.ns); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(live.ns, h.ns)
	}
	delete(live.nets, n.name)
	return errors.Join(errs...)
}

// ipCmd runs the ip tool, in namespace ns unless it is empty, with stdin as
// its standard input (for -batch). The error holds ip's own message.
func ipCmd(ns string, stdin *strings.Reader, args ...string) error {
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.Command("ip", args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netemu: ip %s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(string(out)))
	}
	return nil
}
