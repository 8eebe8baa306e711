// Package fleettest runs a real etcd for edgemap's fleet tests: the
// single-member etcd server of go.etcd.io/etcd/server/v3/embed inside the
// test process, on loopback, with its data in t.TempDir(), which a test
// may stop and start again on the same ports and data; and a TCP proxy a
// test can cut, to take one client off etcd. Imported by tests only;
// everything is safe for concurrent use.
package fleettest

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running (or stopped) embedded etcd.
type Etcd struct {
	t      testing.TB
	dir    string
	client url.URL
	peer   url.URL
	tls    *TLSFiles // nil: plain http

	mu sync.Mutex // guards e
	e  *embed.Etcd
}

// startTimeout bounds an etcd start: 30 s. A healthy one is ready in well
// under a second; a loaded CI machine under the race detector is slower.
const startTimeout = 30 * time.Second

// Start runs an etcd until the test ends.
func Start(t testing.TB) *Etcd {
	t.Helper()
	e := &Etcd{t: t, dir: t.TempDir(), client: loopbackURL(t), peer: loopbackURL(t)}
	e.Restart()
	t.Cleanup(e.Stop)
	return e
}

// StartTLS runs an etcd that serves its clients over TLS only and accepts
// only clients with a certificate of its CA, as a production etcd does;
// it returns the files a client needs.
func StartTLS(t testing.TB) (*Etcd, TLSFiles) {
	t.Helper()
	files := makeCerts(t)
	e := &Etcd{t: t, dir: t.TempDir(), client: loopbackURL(t), peer: loopbackURL(t), tls: &files}
	e.client.Scheme = "https"
	e.Restart()
	t.Cleanup(e.Stop)
	return e, files
}

func loopbackURL(t testing.TB) url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// Endpoint is etcd's client URL.
func (e *Etcd) Endpoint() string { return e.client.String() }

// Restart starts a stopped etcd again, on the same ports and data.
func (e *Etcd) Restart() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.e != nil {
		return
	}
	cfg := embed.NewConfig()
	cfg.Dir = e.dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{e.client}, []url.URL{e.client}
	if e.tls != nil {
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = e.tls.serverCert, e.tls.serverKey
		cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = e.tls.CA, true
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{e.peer}, []url.URL{e.peer}
	cfg.InitialCluster = cfg.Name + "=" + e.peer.String()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true // a test's data need not survive a power cut
	// Sockets of the etcd stopped a moment ago may linger in TIME_WAIT.
	cfg.SocketOpts.ReuseAddress = true
	var ee *embed.Etcd
	var err error
	deadline := time.Now().Add(startTimeout)
	for {
		if ee, err = embed.StartEtcd(cfg); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the old listeners are still closing
	}
	if err != nil {
		e.t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-ee.Server.ReadyNotify():
	case <-time.After(startTimeout):
		ee.Close()
		e.t.Fatalf("etcd not ready within %v", startTimeout)
	}
	e.e = ee
}

// Stop stops etcd; its data stays for Restart.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.e != nil {
		e.e.Close()
		e.e = nil
	}
}

// Client is a client of etcd, closed when the test ends.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Compact compacts etcd's history up to its current revision, as its
// auto-compaction would, and returns that revision.
func (e *Etcd) Compact(t testing.TB) int64 {
	t.Helper()
	c := e.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, "compact-probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// Proxy forwards TCP connections to a target until Cut, which closes
// them all and refuses new ones until Restore: a network partition of
// the clients that reach the target through it.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex // guards cut and conns
	cut   bool
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// NewProxy forwards a loopback port to target (host:port) until the test
// ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// URL is the proxy's address as an etcd client URL.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every connection and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore accepts connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}
