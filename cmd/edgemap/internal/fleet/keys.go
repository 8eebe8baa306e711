package fleet

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/store"
)

// Probe keys live in etcd, one key per record, so that a key made on any
// server is valid on every one; each server copies them into its file,
// where the collector reads them. Sequence numbers are not shared: each
// server keeps the last one it accepted per key, so a report replayed to
// the same server is refused, while the agent's one report to every
// server is accepted by each.

func decodeKey(kv *mvccpb.KeyValue) (store.Key, error) {
	var k store.Key
	if err := json.Unmarshal(kv.Value, &k); err != nil {
		return store.Key{}, fmt.Errorf("etcd key %s: %w", kv.Key, err)
	}
	if want := string(kv.Key[strings.LastIndexByte(string(kv.Key), '/')+1:]); k.ID != want {
		return store.Key{}, fmt.Errorf("etcd key %s: the probe key names itself %q", kv.Key, k.ID)
	}
	return k, nil
}

// writeKeys writes the keys to the server's file; keysMu held.
func (f *Fleet) writeKeys() error {
	f.mu.Lock()
	keys := slices.SortedFunc(maps.Values(f.keys), func(a, b store.Key) int { return strings.Compare(a.ID, b.ID) })
	f.mu.Unlock()
	return f.st.ReplaceKeys(keys)
}

// refreshKeys reads the keys again after a write of this server's, so
// that the server accepts a key it made at once, before the watch brings
// it.
func (f *Fleet) refreshKeys() error {
	ctx, cancel := f.request()
	defer cancel()
	resp, err := f.cli.Get(ctx, f.pfx+dirKeys, clientv3.WithPrefix())
	if err != nil {
		return f.unavailable(err)
	}
	return f.replaceKeys(resp.Kvs, resp.Header.Revision)
}

// AddKey stores a new key in etcd, or fails with store.ErrExists; it
// returns once this server accepts it.
func (f *Fleet) AddKey(k store.Key) error {
	raw, err := json.Marshal(k)
	if err != nil {
		return err
	}
	key := f.pfx + dirKeys + k.ID
	ctx, cancel := f.request()
	defer cancel()
	resp, err := f.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(raw))).Commit()
	if err != nil {
		return f.unavailable(err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("key %q: %w", k.ID, store.ErrExists)
	}
	return f.refreshKeys()
}

// Keys are the keys as this server copied them.
func (f *Fleet) Keys() ([]store.Key, error) { return f.st.Keys() }

// DeleteKey removes a key from etcd, or fails with store.ErrNotFound; it
// returns once this server refuses it.
func (f *Fleet) DeleteKey(id string) error {
	key := f.pfx + dirKeys + id
	ctx, cancel := f.request()
	defer cancel()
	resp, err := f.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return f.unavailable(err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("key %q: %w", id, store.ErrNotFound)
	}
	return f.refreshKeys()
}

// The DNS cookie secret is the fleet's, so that servers behind one anycast
// address accept each other's cookies: made once by the first server that
// asks, copied into each server's file.

// CookieSecret is the fleet's DNS cookie secret. A server that was in the
// fleet before has it in its file; one that was not waits up to 3 s for
// etcd to give it, and otherwise answers with its own until its next
// start (cookies of other servers are then not valid on it: clients get a
// new one, and nothing else changes).
func (f *Fleet) CookieSecret() ([16]byte, error) {
	if !f.wasMember {
		select {
		case <-f.firstSync:
		case <-time.After(firstSyncWait):
		}
		if f.cookieMissing() {
			f.log.Warn("etcd gave no DNS cookie secret in time: this server uses its own until its next start")
		}
	}
	return f.st.CookieSecret()
}

// cookieMissing reports whether the fleet's cookie secret is not yet in
// the file: the file is not a copy of this fleet's and no
// resynchronisation has fetched it.
func (f *Fleet) cookieMissing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.wasMember && !f.haveCookie
}

// fetchCookieSecret gets the fleet's cookie secret and copies it into the
// server's file; a fleet that has none gets this server's (made now if the
// file has none), so that the cookies its clients hold stay valid.
func (f *Fleet) fetchCookieSecret() error {
	mine, err := f.st.CookieSecret()
	if err != nil {
		return err
	}
	key := f.pfx + keyCookie
	ctx, cancel := f.request()
	defer cancel()
	resp, err := f.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, hex.EncodeToString(mine[:]))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return f.unavailable(err)
	}
	secret := mine
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		raw, err := hex.DecodeString(string(kvs[0].Value))
		if err != nil || len(raw) != len(secret) {
			return fmt.Errorf("etcd key %s: not 32 hex digits", key)
		}
		copy(secret[:], raw)
	}
	if err := f.st.SetCookieSecret(secret); err != nil {
		return err
	}
	f.mu.Lock()
	f.haveCookie = true
	f.mu.Unlock()
	f.log.Debug("DNS cookie secret copied from etcd", zap.Bool("made", resp.Succeeded))
	return nil
}
