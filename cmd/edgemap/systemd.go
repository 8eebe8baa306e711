package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// systemd's readiness protocol (sd_notify(3)): datagrams of KEY=VALUE
// lines to the unix socket $NOTIFY_SOCKET names. The units in
// dist/systemd are Type=notify, so systemd starts what depends on edgemap
// only once it says READY=1, shows RELOADING=1 while a reload runs, knows
// a stop is a stop (STOPPING=1), and restarts a process whose WATCHDOG=1
// keep-alives stop. go-systemd's daemon package speaks it (abstract socket
// names, WATCHDOG_PID, MONOTONIC_USEC), needing nothing but
// golang.org/x/sys, which edgemap has already.

// notifier sends sd_notify messages; without $NOTIFY_SOCKET (not started
// by systemd) it sends nothing. Safe for concurrent use.
type notifier struct {
	log *zap.Logger
}

func (n *notifier) send(state string) {
	if n == nil {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("systemd notification failed", zap.String("state", state), zap.Error(err))
	}
}

// ready says the service serves; status is shown by `systemctl status`.
func (n *notifier) ready(status string) { n.send(daemon.SdNotifyReady + "\nSTATUS=" + status) }

// reloading says a reload began. systemd 253 and later (Type=notify-reload)
// want the CLOCK_MONOTONIC time with it, to tell this reload from an
// earlier one; ready says it ended.
func (n *notifier) reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading the GeoIP database")
}

// stopping says the service is shutting down, as it was asked to.
func (n *notifier) stopping() { n.send(daemon.SdNotifyStopping + "\nSTATUS=shutting down") }

// watchdog sends WATCHDOG=1 at half the interval systemd gave
// (WatchdogSec=, as $WATCHDOG_USEC) while alive says the service is alive,
// until ctx ends. Without a watchdog it returns at once.
func (n *notifier) watchdog(ctx context.Context, alive func(context.Context) error) {
	if n == nil {
		return
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("systemd watchdog not understood; not sending keep-alives", zap.Error(err))
	}
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		check, cancel := context.WithTimeout(ctx, interval/2)
		err := alive(check)
		cancel()
		if err == nil {
			n.send(daemon.SdNotifyWatchdog)
		} else if ctx.Err() == nil {
			// No keep-alive: if this lasts, systemd restarts the service.
			n.log.Warn("liveness check failed; no watchdog keep-alive sent", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dnsAlive asks the DNS listener at addr for the SOA of zone over TCP, as
// a watchdog's liveness check: any answer means the listener accepts and
// the handler answers. TCP, because no response rate limit applies to it,
// so that a flood from loopback cannot starve the check.
func dnsAlive(addr netip.AddrPort, zone func() string) func(context.Context) error {
	if ip := addr.Addr(); ip.IsUnspecified() {
		// A wildcard listener is reached on loopback.
		loop := netip.MustParseAddr("127.0.0.1")
		if ip.Is6() && !ip.Is4In6() {
			loop = netip.IPv6Loopback()
		}
		addr = netip.AddrPortFrom(loop, addr.Port())
	}
	return func(ctx context.Context) error {
		m := new(dns.Msg)
		m.SetQuestion(zone(), dns.TypeSOA)
		c := &dns.Client{Net: "tcp", Dialer: &net.Dialer{}}
		r, _, err := c.ExchangeContext(ctx, m, addr.String())
		if err != nil {
			return fmt.Errorf("DNS at %s: %w", addr, err)
		}
		if r.Id != m.Id {
			return fmt.Errorf("DNS at %s: an answer to another query", addr)
		}
		return nil
	}
}
