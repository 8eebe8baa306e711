package fleet

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/store"
)

// Staging bounds: the blobs of a write are put in transactions of at most
// maxStageBytes and maxStageOps, well under etcd's default request limit
// (1.5 MiB) and transaction limit (128 operations).
const (
	maxStageBytes = 1 << 20
	maxStageOps   = 64
	// maxFetchOps bounds the blobs read in one transaction.
	maxFetchOps = 64
	// maxPendingBytes bounds the blobs the watch delivered that wait for
	// their manifest: 64 MiB; beyond it they are read again when needed.
	maxPendingBytes = 64 << 20
)

// ConfigAt is the configuration this server copied, and its revision in
// etcd: 0 when the file holds no copy of this fleet's (a single server's
// own configuration, served until the fleet's is copied).
func (f *Fleet) ConfigAt() (store.Config, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur.cfg.Clone(), uint64(f.cur.rev), nil
}

// CommitConfig makes c the fleet's configuration if etcd's is still at
// revision rev: the blobs c adds are put first, then one transaction
// replaces the manifest only if its revision is rev. On success the copy
// in the server's file is c at the new revision before CommitConfig
// returns; on a conflict the copy has caught up with etcd, so that the
// write can be made again on top of the winner. An unreachable etcd is
// node.ErrConfigUnavailable.
func (f *Fleet) CommitConfig(rev uint64, c store.Config) (uint64, bool, error) {
	enc, err := encode(c)
	if err != nil {
		return rev, false, err
	}
	f.applyMu.Lock()
	f.mu.Lock()
	cur := f.cur
	f.mu.Unlock()
	if uint64(cur.rev) != rev {
		f.applyMu.Unlock()
		return rev, false, fmt.Errorf("the copy is at revision %d, not %d: %w", cur.rev, rev, store.ErrConflict)
	}
	if cur.rev != 0 && enc.man.sameContent(&cur.man) {
		f.applyMu.Unlock()
		return rev, false, nil
	}
	enc.man.SerialBase = cur.man.SerialBase
	if cur.rev == 0 {
		// The first configuration of the fleet: its serials continue from
		// the serial this server answered until now.
		enc.man.SerialBase = zoneSerial(cur.cfg)
	}
	newRev, cluster, err := f.commit(cur, enc)
	if errors.Is(err, store.ErrConflict) {
		f.applyMu.Unlock()
		// Catch up, so that the write is made again on the winner.
		if serr := f.syncNow("conflict"); serr != nil {
			return rev, false, serr
		}
		return rev, false, err
	}
	if err != nil {
		f.applyMu.Unlock()
		return rev, false, err
	}
	c = c.Clone()
	if c.Zone != nil {
		c.Zone.Serial = serialAt(enc.man.SerialBase, uint64(newRev))
	}
	err = f.setMirror(mirror{rev: newRev, man: enc.man, cfg: c, cluster: cluster})
	f.applyMu.Unlock()
	if err != nil {
		return rev, false, err
	}
	f.spawn(func() { f.collect(newRev, enc.man) })
	f.kickRegistration()
	return uint64(newRev), true, nil
}

// commit puts enc's new blobs and then the manifest, if the manifest is
// still at cur.rev; it returns the revision and the cluster of the commit.
func (f *Fleet) commit(cur mirror, enc encoded) (int64, uint64, error) {
	have := map[string]bool{}
	for _, h := range cur.man.blobs() {
		have[h] = true
	}
	// Put every blob the manifest at cur.rev does not name, even one
	// that exists: the put is what keeps collect from deleting it (see
	// collect).
	var batch []clientv3.Op
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		ctx, cancel := f.request()
		defer cancel()
		_, err := f.cli.Txn(ctx).Then(batch...).Commit()
		batch, size = nil, 0
		if err != nil {
			return f.unavailable(err)
		}
		return nil
	}
	added := slices.Sorted(func(yield func(string) bool) {
		for h := range enc.blobs {
			if !have[h] && !yield(h) {
				return
			}
		}
	})
	for _, h := range added {
		b := enc.blobs[h]
		if len(batch) > 0 && (size+len(b) > maxStageBytes || len(batch) == maxStageOps) {
			if err := flush(); err != nil {
				return 0, 0, err
			}
		}
		batch = append(batch, clientv3.OpPut(f.pfx+dirBlobs+h, string(b)))
		size += len(b)
	}
	if err := flush(); err != nil {
		return 0, 0, err
	}
	raw, err := json.Marshal(enc.man)
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := f.request()
	defer cancel()
	resp, err := f.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(f.pfx+keyConfig), "=", cur.rev)).
		Then(clientv3.OpPut(f.pfx+keyConfig, string(raw))).
		Commit()
	if err != nil {
		return 0, 0, f.unavailable(err)
	}
	f.setReachable(nil)
	if !resp.Succeeded {
		return 0, 0, fmt.Errorf("the fleet's configuration is no longer at revision %d: %w", cur.rev, store.ErrConflict)
	}
	return resp.Header.Revision, resp.Header.ClusterId, nil
}

// setMirror writes m to the server's file and makes it the copy; applyMu
// held.
func (f *Fleet) setMirror(m mirror) error {
	raw, err := json.Marshal(note{Prefix: f.pfx, Cluster: m.cluster, Manifest: m.man})
	if err != nil {
		return err
	}
	if _, err := f.st.MirrorConfig(uint64(m.rev), m.cfg, raw); err != nil {
		return err
	}
	f.mu.Lock()
	f.cur = m
	for h, p := range f.pending {
		if p.rev <= m.rev { // staged for this manifest or a lost one
			delete(f.pending, h)
			f.pendingBytes -= len(p.raw)
		}
	}
	f.head = max(f.head, m.rev)
	if f.head == m.rev {
		f.current = time.Now()
	}
	f.mu.Unlock()
	return nil
}

// applyHead makes the copy the configuration whose manifest is kv (nil:
// etcd holds none), read at header. whole says that kv and header were
// read as etcd's latest, with no commit of this server's since (a
// resynchronisation), rather than delivered by the watch, whose events may
// come after such a commit. It reports whether the copy changed, for the caller to publish
// it. applyMu held.
func (f *Fleet) applyHead(kv *mvccKV, header *etcdserverpb.ResponseHeader, whole bool) (bool, error) {
	f.mu.Lock()
	cur := f.cur
	f.mu.Unlock()
	foreign := false
	switch {
	case cur.cluster != 0 && cur.cluster != header.ClusterId:
		f.log.Warn("the file holds a copy of another etcd cluster's configuration; it is replaced by this one's",
			zap.Uint64("copy_of", cur.cluster), zap.Uint64("cluster", header.ClusterId))
		foreign = true
	case whole && header.Revision < cur.rev:
		f.log.Warn("etcd is at an older revision than this server's copy (restored from a backup?); the copy follows etcd",
			zap.Int64("etcd", header.Revision), zap.Int64("copy", cur.rev))
		foreign = true
	}
	if foreign {
		cur.rev, cur.man = 0, manifest{}
	}
	if kv == nil {
		if !whole {
			return false, nil // deleted: a resynchronisation decides
		}
		return f.seed(cur, header)
	}
	if kv.rev <= cur.rev {
		return false, nil
	}
	man, err := decodeManifest(kv.value)
	if err != nil {
		return false, err
	}
	blobs, err := f.fetch(man, cur.man)
	if err != nil {
		return false, err
	}
	cfg, err := assemble(&man, &cur.man, cur.cfg, func(h string) ([]byte, error) {
		if b, ok := blobs[h]; ok {
			return b, nil
		}
		return nil, fmt.Errorf("blob %s: missing from etcd", h)
	})
	if err != nil {
		return false, fmt.Errorf("the configuration at revision %d: %w", kv.rev, err)
	}
	if cfg.Zone != nil {
		cfg.Zone.Serial = serialAt(man.SerialBase, uint64(kv.rev))
	}
	// Every server checks what it commits; this catches what was put
	// there otherwise (etcdctl), which the server refuses to serve.
	if err := config.Check(cfg); err != nil {
		return false, fmt.Errorf("the configuration at revision %d is not valid, and this server keeps its copy: %w", kv.rev, err)
	}
	if err := f.setMirror(mirror{rev: kv.rev, man: man, cfg: cfg, cluster: header.ClusterId}); err != nil {
		return false, err
	}
	f.log.Info("configuration copied from etcd", zap.Int64("from_revision", cur.rev), zap.Int64("revision", kv.rev),
		zap.Uint32("serial", zoneSerial(cfg)), zap.Int("blobs_read", len(blobs)))
	return true, nil
}

// seed writes this server's configuration to an etcd that holds none: the
// first server of a new fleet (started on a single server's file), or one
// that survived the loss of etcd's data, restores the fleet's
// configuration. An empty configuration is not written. It reports
// whether the copy changed (its revision and serial). applyMu held.
func (f *Fleet) seed(cur mirror, header *etcdserverpb.ResponseHeader) (bool, error) {
	if cur.cfg.Zone == nil && len(cur.cfg.Edges) == 0 && len(cur.cfg.Properties) == 0 && len(cur.cfg.Targets) == 0 {
		return false, nil
	}
	enc, err := encode(cur.cfg)
	if err != nil {
		return false, err
	}
	enc.man.SerialBase = zoneSerial(cur.cfg)
	cur.rev, cur.man = 0, manifest{}
	if err := f.seedSecrets(); err != nil {
		return false, err
	}
	newRev, cluster, err := f.commit(cur, enc)
	if errors.Is(err, store.ErrConflict) {
		return false, nil // another server seeded first: the watch brings it
	}
	if err != nil {
		return false, err
	}
	cfg := cur.cfg.Clone()
	if cfg.Zone != nil {
		cfg.Zone.Serial = serialAt(enc.man.SerialBase, uint64(newRev))
	}
	f.log.Warn("etcd held no configuration: this server's was written to it", zap.String("prefix", f.pfx),
		zap.Int64("revision", newRev), zap.Uint64("cluster", header.ClusterId))
	return true, f.setMirror(mirror{rev: newRev, man: enc.man, cfg: cfg, cluster: cluster})
}

// seedSecrets writes this server's probe keys and DNS cookie secret to an
// etcd that holds none, with its configuration: agents' keys and clients'
// cookies stay valid when a fleet is made from a single server's file, or
// restored after etcd lost its data. Each is written only where etcd has
// none.
func (f *Fleet) seedSecrets() error {
	f.mu.Lock()
	keys := slices.SortedFunc(maps.Values(f.keys), func(a, b store.Key) int { return strings.Compare(a.ID, b.ID) })
	f.mu.Unlock()
	secret, err := f.st.CookieSecret()
	if err != nil {
		return err
	}
	put := func(key, value string) error {
		ctx, cancel := f.request()
		defer cancel()
		_, err := f.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, value)).Commit()
		if err != nil {
			return f.unavailable(err)
		}
		return nil
	}
	for _, k := range keys {
		raw, err := json.Marshal(k)
		if err != nil {
			return err
		}
		if err := put(f.pfx+dirKeys+k.ID, string(raw)); err != nil {
			return err
		}
	}
	return put(f.pfx+keyCookie, hex.EncodeToString(secret[:]))
}

// fetch returns the blobs of man that prev does not name, from the blobs
// the watch delivered or from etcd. Blobs are named by their content, so
// any revision that has one has the same bytes: they are read at the
// latest, where compaction cannot have removed them.
func (f *Fleet) fetch(man, prev manifest) (map[string][]byte, error) {
	have := map[string]bool{}
	for _, h := range prev.blobs() {
		have[h] = true
	}
	out := map[string][]byte{}
	var missing []string
	f.mu.Lock()
	for _, h := range man.blobs() {
		if have[h] || out[h] != nil {
			continue
		}
		if p, ok := f.pending[h]; ok {
			out[h] = p.raw
		} else if !slices.Contains(missing, h) {
			missing = append(missing, h)
		}
	}
	f.mu.Unlock()
	for chunk := range slices.Chunk(missing, maxFetchOps) {
		ops := make([]clientv3.Op, len(chunk))
		for i, h := range chunk {
			ops[i] = clientv3.OpGet(f.pfx + dirBlobs + h)
		}
		ctx, cancel := f.request()
		resp, err := f.cli.Txn(ctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return nil, f.unavailable(err)
		}
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 0 {
				// Deleted by the collection that followed a newer
				// manifest: the caller starts again from that one.
				return nil, fmt.Errorf("blob %s: %w", chunk[i], errBlobGone)
			}
			if hashBlob(kvs[0].Value) != chunk[i] {
				return nil, fmt.Errorf("blob %s: its content does not match its name", chunk[i])
			}
			out[chunk[i]] = kvs[0].Value
		}
	}
	return out, nil
}

// errBlobGone: a blob of a manifest was deleted meanwhile, because a newer
// manifest replaced it; resynchronising reads the newer one.
var errBlobGone = errors.New("gone from etcd (a newer configuration replaced it)")

// collect deletes the blobs that the manifest at rev does not name and
// that were last put before rev. A writer working from rev puts every
// blob it needs that rev does not name, which moves the blob's
// ModRevision past rev, so collect never deletes what a write in progress
// will name: each delete is conditional on the blob's ModRevision being
// the one collect saw, and on the manifest still being at rev. A losing
// writer's blobs are collected after the next commit.
func (f *Fleet) collect(rev int64, man manifest) {
	if !f.gcActive.CompareAndSwap(false, true) {
		return // the one running will leave the rest to the next commit
	}
	defer f.gcActive.Store(false)
	keep := map[string]bool{}
	for _, h := range man.blobs() {
		keep[h] = true
	}
	ctx, cancel := f.request()
	defer cancel()
	resp, err := f.cli.Get(ctx, f.pfx+dirBlobs, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		f.log.Debug("collecting unused blobs", zap.Error(err))
		return
	}
	type stale struct {
		key string
		rev int64
	}
	var gone []stale
	for _, kv := range resp.Kvs {
		if h := strings.TrimPrefix(string(kv.Key), f.pfx+dirBlobs); !keep[h] && kv.ModRevision < rev {
			gone = append(gone, stale{string(kv.Key), kv.ModRevision})
		}
	}
	deleted := 0
	for chunk := range slices.Chunk(gone, 100) {
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(f.pfx+keyConfig), "=", rev)}
		var ops []clientv3.Op
		for _, s := range chunk {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.key), "=", s.rev))
			ops = append(ops, clientv3.OpDelete(s.key))
		}
		r, err := f.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil || !r.Succeeded {
			break // changed meanwhile: the next commit collects
		}
		deleted += len(chunk)
	}
	if deleted > 0 {
		f.log.Debug("unused blobs deleted", zap.Int("blobs", deleted), zap.Int64("revision", rev))
	}
}
