package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
)

// Member is one name server of the fleet as it registers itself under
// nodes/<id>, with a lease: a server that stops renewing it (dead, or cut
// off from etcd) disappears within the lease's TTL.
type Member = config.Node

// Members are the fleet's servers by ID: this one as it is now, the others
// as they last registered.
func (f *Fleet) Members() []Member {
	self := f.selfMember(time.Now(), 0)
	f.mu.Lock()
	out := make([]Member, 0, len(f.members)+1)
	for id, m := range f.members {
		if id != self.ID {
			out = append(out, m)
		}
	}
	f.mu.Unlock()
	if r, ok := f.lastSelf(); ok {
		self.Reports = r.Reports
	}
	out = append(out, self)
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// selfMember is this server's registration as of now.
func (f *Fleet) selfMember(now time.Time, reports uint64) Member {
	f.mu.Lock()
	n, m := f.n, f.self
	f.mu.Unlock()
	m.ID = f.opts.ID
	m.MapIntervalMs = f.opts.MapInterval.Milliseconds()
	m.Reports = reports
	m.Updated = now
	if n != nil {
		st := n.Status()
		m.Revision, m.Serial, m.MapBuilt = st.Revision, st.Serial, st.MapBuilt
	}
	return m
}

// lastSelf is this server's registration as last written.
func (f *Fleet) lastSelf() (Member, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.members[f.opts.ID]
	return m, ok
}

func (f *Fleet) kickRegistration() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// register keeps this server registered until Close: a lease, kept alive,
// and under it the registration (rewritten every map interval and when
// the server publishes a new configuration) and the demand (when Share
// has new). When the lease is lost (etcd was unreachable for longer than
// its TTL), it starts again with a new one.
func (f *Fleet) register() {
	ttl := int64((f.opts.LeaseTTL + time.Second - 1) / time.Second)
	var reports, lastTotal uint64
	for f.ctx.Err() == nil {
		ctx, cancel := f.request()
		lease, err := f.cli.Grant(ctx, ttl)
		cancel()
		if err != nil {
			select {
			case <-f.ctx.Done():
			case <-time.After(pollInterval):
			}
			continue
		}
		alive, err := f.cli.KeepAlive(f.ctx, lease.ID)
		if err != nil {
			continue
		}
		t := time.NewTicker(f.opts.MapInterval)
		demandWritten := false
		for lost := false; !lost; {
			now := time.Now()
			m := f.selfMember(now, reports)
			ok := f.putLeased(dirNodes+m.ID, m, lease.ID)
			f.mu.Lock()
			out, outRound := f.outDemand, f.outRound
			f.mu.Unlock()
			if ok && out != nil && (!demandWritten || outRound != f.writtenRound) {
				if f.putRaw(dirDemand+m.ID, out, lease.ID) {
					demandWritten, f.writtenRound = true, outRound
				}
			}
			select {
			case <-f.ctx.Done():
				t.Stop()
				// Withdrawn at once: the server leaves `node list` now
				// (unless etcd is unreachable: then at the lease's end).
				f.mu.Lock()
				reachable := f.etcdErr == nil
				f.mu.Unlock()
				if reachable {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					f.cli.Revoke(ctx, lease.ID)
					cancel()
				}
				return
			case _, open := <-alive:
				if !open {
					f.log.Warn("the registration's lease ended (etcd was unreachable for longer than its TTL); registering again")
					lost = true
				}
				// A renewal alone changes nothing to write, but the
				// loop writes anyway: at most every TTL/3.
			case <-t.C:
				f.mu.Lock()
				n := f.n
				f.mu.Unlock()
				if n != nil {
					total := n.Status().Reports
					reports, lastTotal = total-lastTotal, total
				}
			case <-f.kick:
			}
		}
		t.Stop()
	}
}

func (f *Fleet) putLeased(key string, v any, lease clientv3.LeaseID) bool {
	raw, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return f.putRaw(key, raw, lease)
}

func (f *Fleet) putRaw(key string, raw []byte, lease clientv3.LeaseID) bool {
	ctx, cancel := f.request()
	defer cancel()
	_, err := f.cli.Put(ctx, f.pfx+key, string(raw), clientv3.WithLease(lease))
	if err != nil && f.ctx.Err() == nil {
		f.log.Debug("registering", zap.String("key", key), zap.Error(err))
	}
	return err == nil
}

// replaceShared makes the registrations and demand those read whole.
func (f *Fleet) replaceShared(nodes, demand []*mvccpb.KeyValue) {
	members := map[string]Member{}
	for _, kv := range nodes {
		var m Member
		if json.Unmarshal(kv.Value, &m) == nil && m.ID != "" {
			members[m.ID] = m
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members = members
	self := f.demand[f.opts.ID]
	f.demand = map[string][]demandRecord{}
	for _, kv := range demand {
		id := strings.TrimPrefix(string(kv.Key), f.pfx+dirDemand)
		var r demandRecord
		if json.Unmarshal(kv.Value, &r) == nil {
			f.demand[id] = keepRecord(nil, r)
		}
	}
	if self != nil {
		f.demand[f.opts.ID] = self // this server's own are the truth
	}
}

// sharedEvent applies a watch event of nodes/ or demand/.
func (f *Fleet) sharedEvent(key string, put bool, value []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := strings.CutPrefix(key, dirNodes); ok {
		if !put {
			delete(f.members, id)
			return
		}
		var m Member
		if json.Unmarshal(value, &m) == nil && m.ID == id {
			if _, known := f.members[id]; !known && m.MapIntervalMs != f.opts.MapInterval.Milliseconds() {
				f.log.Warn("a server of the fleet has another --map-interval: the servers' demand is shared once per interval, so their maps differ",
					zap.String("node", id), zap.Int64("its_ms", m.MapIntervalMs), zap.Int64("ours_ms", f.opts.MapInterval.Milliseconds()))
			}
			f.members[id] = m
		}
		return
	}
	id := strings.TrimPrefix(key, dirDemand)
	if id == f.opts.ID {
		return // this server's own, which it keeps itself
	}
	if !put {
		delete(f.demand, id)
		return
	}
	var r demandRecord
	if json.Unmarshal(value, &r) == nil {
		f.demand[id] = keepRecord(f.demand[id], r)
	}
}

// sortedIDs are the keys of m in order.
func sortedIDs[V any](m map[string]V) []string {
	return slices.SortedFunc(maps.Keys(m), cmp.Compare[string])
}
