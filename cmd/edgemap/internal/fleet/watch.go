package fleet

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/store"
)

// mvccKV is a manifest as read: its ModRevision and bytes.
type mvccKV struct {
	rev   int64
	value []byte
}

// follow keeps the copy up to date until Close: it reads everything the
// fleet shares at one revision, then follows etcd's watch from there;
// when the watch ends (etcd lost its leader, compacted past the watch's
// revision, or the poll saw a revision the watch did not bring), it reads
// everything again.
func (f *Fleet) follow() {
	reason, lastErr := "start", ""
	for f.ctx.Err() == nil {
		rev, err := f.sync(reason)
		f.firstOnce.Do(func() { close(f.firstSync) })
		if err != nil {
			// Logged once per kind: it is retried every 0.5 s. An
			// unreachable etcd is logged by setReachable.
			if msg := err.Error(); f.ctx.Err() == nil && msg != lastErr && !errors.Is(err, node.ErrConfigUnavailable) {
				f.log.Warn("the fleet's state cannot be read from etcd; answering from this server's copy", zap.Error(err))
				lastErr = msg
			}
			reason = "retry"
			select {
			case <-f.ctx.Done():
			case <-f.resync:
			case <-time.After(pollInterval):
			}
			continue
		}
		lastErr = ""
		reason = f.watch(rev)
	}
}

// syncNow reads everything again at once (after a conflict).
func (f *Fleet) syncNow(reason string) error {
	_, err := f.sync(reason)
	return err
}

// sync reads the manifest, the keys, the registrations and the demand at
// one revision, makes the copy match, and returns the revision.
func (f *Fleet) sync(reason string) (int64, error) {
	f.metrics.resyncs.WithLabelValues(reason).Inc()
	if f.cookieMissing() {
		if err := f.fetchCookieSecret(); err != nil {
			return 0, err
		}
	}
	// Read without applyMu, so that a write need not wait for a read that
	// waits for an unreachable etcd; a commit of this server's that lands
	// meanwhile makes the read no longer etcd's latest as far as the copy
	// is concerned.
	f.mu.Lock()
	before := f.cur.rev
	f.mu.Unlock()
	ctx, cancel := f.request()
	resp, err := f.cli.Txn(ctx).Then(
		clientv3.OpGet(f.pfx+keyConfig),
		clientv3.OpGet(f.pfx+dirKeys, clientv3.WithPrefix()),
		clientv3.OpGet(f.pfx+dirNodes, clientv3.WithPrefix()),
		clientv3.OpGet(f.pfx+dirDemand, clientv3.WithPrefix()),
	).Commit()
	cancel()
	if err != nil {
		return 0, f.unavailable(err)
	}
	f.setReachable(nil)
	var head *mvccKV
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		head = &mvccKV{kvs[0].ModRevision, kvs[0].Value}
	}
	f.applyMu.Lock()
	f.mu.Lock()
	latest := f.cur.rev == before
	f.mu.Unlock()
	changed, err := f.applyHead(head, resp.Header, latest)
	f.applyMu.Unlock()
	if err != nil {
		return 0, err
	}
	keys := resp.Responses[1].GetResponseRange().Kvs
	if changed && head == nil {
		// Seeded: etcd's keys are this server's now, not the none read.
		ctx, cancel := f.request()
		r, err := f.cli.Get(ctx, f.pfx+dirKeys, clientv3.WithPrefix())
		cancel()
		if err != nil {
			return 0, f.unavailable(err)
		}
		keys, resp.Header = r.Kvs, r.Header
	}
	f.mu.Lock()
	f.head = 0
	if head != nil {
		f.head = head.rev
	}
	if f.head == f.cur.rev {
		f.current = time.Now()
	}
	f.mu.Unlock()
	if err := f.replaceKeys(keys, resp.Header.Revision); err != nil {
		return 0, err
	}
	f.replaceShared(resp.Responses[2].GetResponseRange().Kvs, resp.Responses[3].GetResponseRange().Kvs)
	if changed {
		f.publish()
	}
	return resp.Header.Revision, nil
}

// publish has the node build and publish a map from the copy.
func (f *Fleet) publish() {
	f.mu.Lock()
	n := f.n
	f.mu.Unlock()
	if n == nil {
		return
	}
	if err := n.ConfigChanged(); err != nil && f.ctx.Err() == nil {
		f.log.Error("publishing the fleet's configuration", zap.Error(err))
	}
	f.kickRegistration()
}

// watch follows every change under the prefix from revision rev+1 until
// the watch ends, and returns why it ended (the reason of the next
// resynchronisation). With WithRequireLeader, an etcd member that loses
// its cluster's leader ends the watch rather than leaving it silent.
func (f *Fleet) watch(rev int64) string {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(f.ctx))
	defer cancel()
	wch := f.cli.Watch(ctx, f.pfx, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case <-f.ctx.Done():
			return "closed"
		case <-f.resync:
			return "lag"
		case resp, ok = <-wch:
		}
		if !ok {
			return "watch"
		}
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) || resp.CompactRevision != 0 {
				f.log.Info("etcd compacted past this server's revision; reading the fleet's state whole", zap.Int64("revision", rev))
				return "compacted"
			}
			f.log.Debug("watch ended", zap.Error(err))
			return "watch"
		}
		if resp.IsProgressNotify() || len(resp.Events) == 0 {
			continue
		}
		f.setReachable(nil)
		if err := f.events(resp.Events, resp.Header); err != nil {
			f.log.Warn("following etcd", zap.Error(err))
			return "error"
		}
		rev = resp.Events[len(resp.Events)-1].Kv.ModRevision
	}
}

// events applies one watch response's events.
func (f *Fleet) events(evs []*clientv3.Event, header *etcdserverpb.ResponseHeader) error {
	var head *mvccKV
	keys := false
	for _, ev := range evs {
		key := strings.TrimPrefix(string(ev.Kv.Key), f.pfx)
		put := ev.Type == mvccpb.PUT
		switch {
		case key == keyConfig:
			if !put {
				f.log.Warn("the fleet's configuration was deleted from etcd; this server keeps its copy and writes it back")
				return errors.New("configuration deleted")
			}
			head = &mvccKV{ev.Kv.ModRevision, ev.Kv.Value}
		case strings.HasPrefix(key, dirBlobs):
			if put {
				f.addPending(strings.TrimPrefix(key, dirBlobs), ev.Kv.Value, ev.Kv.ModRevision)
			}
		case strings.HasPrefix(key, dirKeys):
			keys = true
		case strings.HasPrefix(key, dirNodes), strings.HasPrefix(key, dirDemand):
			f.sharedEvent(key, put, ev.Kv.Value)
		}
	}
	if keys {
		if err := f.keyEvents(evs); err != nil {
			return err
		}
	}
	if head == nil {
		return nil
	}
	f.mu.Lock()
	f.head = max(f.head, head.rev)
	f.mu.Unlock()
	f.applyMu.Lock()
	changed, err := f.applyHead(head, header, false)
	f.applyMu.Unlock()
	if errors.Is(err, errBlobGone) {
		return err // a newer manifest is on its way; resynchronise
	}
	if err != nil {
		return err
	}
	if changed {
		f.publish()
	}
	return nil
}

func (f *Fleet) addPending(hash string, raw []byte, rev int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pending[hash]; ok || f.pendingBytes+len(raw) > maxPendingBytes || hashBlob(raw) != hash {
		return
	}
	f.pending[hash] = pendingBlob{raw: raw, rev: rev}
	f.pendingBytes += len(raw)
}

// poll asks etcd for the configuration's revision every pollInterval: it
// is how the server knows whether etcd is reachable and whether its copy
// is current, and it starts a resynchronisation when two polls in a row
// saw a revision the server does not serve (a watch that missed it).
func (f *Fleet) poll() {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(f.ctx, pollInterval*2)
		resp, err := f.cli.Get(ctx, f.pfx+keyConfig, clientv3.WithKeysOnly())
		cancel()
		f.setReachable(err)
		if err != nil {
			f.wakeResync() // the follower retries at once when etcd is back
			continue
		}
		var head int64
		if len(resp.Kvs) > 0 {
			head = resp.Kvs[0].ModRevision
		}
		f.mu.Lock()
		f.head = head
		stale := head != f.cur.rev || (f.cur.cluster != 0 && f.cur.cluster != resp.Header.ClusterId)
		if stale {
			f.stalePolls++
		} else {
			f.stalePolls = 0
			f.current = time.Now()
		}
		wake := f.stalePolls >= 2
		f.mu.Unlock()
		if wake {
			f.wakeResync()
		}
	}
}

func (f *Fleet) wakeResync() {
	select {
	case f.resync <- struct{}{}:
	default:
	}
}

// replaceKeys makes the copy of the keys the keys read at rev.
func (f *Fleet) replaceKeys(kvs []*mvccpb.KeyValue, rev int64) error {
	f.keysMu.Lock()
	defer f.keysMu.Unlock()
	f.mu.Lock()
	if rev <= f.keysRev {
		f.mu.Unlock()
		return nil
	}
	keys := map[string]store.Key{}
	for _, kv := range kvs {
		k, err := decodeKey(kv)
		if err != nil {
			f.mu.Unlock()
			return err
		}
		keys[k.ID] = k
	}
	f.keys, f.keysRev = keys, rev
	f.mu.Unlock()
	return f.writeKeys()
}

// keyEvents applies the events of keys newer than the copy.
func (f *Fleet) keyEvents(evs []*clientv3.Event) error {
	f.keysMu.Lock()
	defer f.keysMu.Unlock()
	f.mu.Lock()
	changed := false
	for _, ev := range evs {
		id, ok := strings.CutPrefix(string(ev.Kv.Key), f.pfx+dirKeys)
		if !ok || ev.Kv.ModRevision <= f.keysRev {
			continue
		}
		f.keysRev = ev.Kv.ModRevision
		changed = true
		if ev.Type != mvccpb.PUT {
			delete(f.keys, id)
			continue
		}
		k, err := decodeKey(ev.Kv)
		if err != nil {
			f.mu.Unlock()
			return err
		}
		f.keys[k.ID] = k
	}
	f.mu.Unlock()
	if !changed {
		return nil
	}
	return f.writeKeys()
}
