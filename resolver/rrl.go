package resolver

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math/bits"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"
	"go.uber.org/zap"
)

// Response rate limiting (RRL), after BIND's rate-limit, Knot's rrl module
// and NSD's rrl: a forger who sends queries in a victim's name gets at most
// a few answers per second per response class aimed at the victim's
// network; over that, every slip-th response goes out truncated (TC=1),
// which a real resolver retries over TCP where no forger can follow, and
// the rest are dropped. TCP answers and queries with a valid server cookie
// (RFC 7873: the address has received our answers before) are never
// limited.
//
// Each response is counted against a flow: its class, the client's network
// (--rrl-ipv4-prefix, --rrl-ipv6-prefix) and, for answers, the name and
// type asked. A flow is a token bucket kept as its theoretical arrival time
// (GCRA: the bucket is full when the time is in the past; each response
// moves it 1/rate ahead; a response that would move it more than a second
// ahead is limited). The buckets live in a fixed table and a flow hashes to
// two of them, in one cache line (the table is read on every answer); it is
// judged by the emptier of the two and moves both up to its new time (a
// count-min sketch with conservative update). Flows that share a bucket add
// up, so a full table limits more, never less, and the table never grows.
// Each bucket is one 64-bit word updated with compare-and-swap: no locks, no
// allocation.

// RRL response classes. An answer of a property is asked by a resolver once
// per client network (ECS scope) and TTL, so a big resolver asks it often;
// everything else is the same for every client and is cached once.
const (
	classMapped   = iota // A/AAAA answers of a property: per network, name and type
	classAnswer          // other answers (apex SOA, NS, name server addresses, ANY, CHAOS): per network, name and type
	classNXDomain        // NXDOMAIN: per network and zone
	classNoData          // NOERROR without answers: per network and zone
	classError           // REFUSED, FORMERR, NOTIMP, SERVFAIL, BADVERS: per network
	rrlClasses
)

var rrlClassNames = [rrlClasses]string{"mapped answer", "answer", "NXDOMAIN", "NODATA", "error"}

// RRL defaults; README "Security" explains each.
const (
	DefaultRRLMappedRate = 1000
	DefaultRRLRate       = 20
	DefaultRRLSlip       = 2
	DefaultRRLIPv4Prefix = 24
	DefaultRRLIPv6Prefix = 56
	DefaultRRLTableSize  = 1 << 16
	// rrlLogEvery bounds the limiter's log to one line per period.
	rrlLogEvery = 30 * time.Second
)

// RRLConfig configures a RateLimiter. Rates are responses per second per
// flow; a flow may also spend one second's worth at once.
type RRLConfig struct {
	// MappedRate limits property A/AAAA answers; 0 does not limit them.
	MappedRate int
	// Rate limits every other class, each on its own; 0 does not limit.
	Rate int
	// Slip: every Slip-th limited response goes out truncated, the rest
	// are dropped; 0 drops all, 1 truncates all. At most 10.
	Slip int
	// IPv4Prefix and IPv6Prefix are the client network lengths a flow
	// counts per.
	IPv4Prefix, IPv6Prefix int
	// Exempt lists client networks never limited (large resolvers the
	// operator knows).
	Exempt []netip.Prefix
	// TableSize is the number of buckets, rounded up to a power of two
	// and at least 8 (a cache line); 8 bytes each.
	TableSize int
	// Logger gets one line per rrlLogEvery while anything is limited.
	Logger *zap.Logger
}

// RateLimiter decides, for each UDP response, whether it goes out, goes out
// truncated or is dropped. Safe for concurrent use; Decide neither locks
// nor allocates.
type RateLimiter struct {
	cfg      RRLConfig
	exempt   *bart.Lite
	seed     maphash.Seed
	epoch    time.Time
	interval [rrlClasses]int64 // µs a response moves its flow's time; 0: unlimited
	buckets  []atomic.Uint64   // theoretical arrival time in µs since epoch (low 56 bits), slip count (high 8)
	lines    uint64            // mask of the line index: len(buckets)/lineBuckets - 1
	nextLog  atomic.Int64      // µs since epoch before which nothing is logged
}

const (
	tatBits  = 56
	tatMask  = 1<<tatBits - 1
	burstUs  = int64(time.Second / time.Microsecond) // a flow may run one second ahead
	maxSlip  = 10
	keyBytes = 1 + 16 + 2 + 255
	// lineBuckets is the buckets in a 64-byte cache line. A table this
	// large is allocated page-aligned, so its lines are whole.
	lineBuckets = 8
)

// NewRateLimiter checks cfg and makes its table.
func NewRateLimiter(cfg RRLConfig) (*RateLimiter, error) {
	switch {
	case cfg.MappedRate < 0 || cfg.Rate < 0:
		return nil, errors.New("rrl: a rate cannot be negative")
	case cfg.MappedRate > 1e6 || cfg.Rate > 1e6:
		return nil, errors.New("rrl: a rate above 1000000/s is no limit; use 0")
	case cfg.Slip < 0 || cfg.Slip > maxSlip:
		return nil, fmt.Errorf("rrl: slip %d is not 0..%d", cfg.Slip, maxSlip)
	case cfg.IPv4Prefix < 1 || cfg.IPv4Prefix > 32:
		return nil, fmt.Errorf("rrl: IPv4 prefix length %d is not 1..32", cfg.IPv4Prefix)
	case cfg.IPv6Prefix < 1 || cfg.IPv6Prefix > 128:
		return nil, fmt.Errorf("rrl: IPv6 prefix length %d is not 1..128", cfg.IPv6Prefix)
	case cfg.TableSize < 1 || cfg.TableSize > 1<<26:
		return nil, fmt.Errorf("rrl: table size %d is not 1..%d", cfg.TableSize, 1<<26)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	size := max(lineBuckets, 1<<bits.Len(uint(cfg.TableSize-1)))
	l := &RateLimiter{
		cfg:     cfg,
		exempt:  new(bart.Lite),
		seed:    maphash.MakeSeed(),
		epoch:   time.Now(),
		buckets: make([]atomic.Uint64, size),
		lines:   uint64(size/lineBuckets - 1),
	}
	for _, p := range cfg.Exempt {
		l.exempt.Insert(p.Masked())
	}
	for c := range l.interval {
		rate := cfg.Rate
		if c == classMapped {
			rate = cfg.MappedRate
		}
		if rate > 0 {
			l.interval[c] = max(1, burstUs/int64(rate))
		}
	}
	return l, nil
}

// exempted reports whether src is on the allow-list.
func (l *RateLimiter) exempted(src netip.Addr) bool {
	return l.exempt.Lookup(src)
}

// network is the client network src counts in.
func (l *RateLimiter) network(src netip.Addr) netip.Prefix {
	plen := l.cfg.IPv6Prefix
	if src.Is4() {
		plen = l.cfg.IPv4Prefix
	}
	p, _ := src.Prefix(plen)
	return p
}

// decide counts one response of class to src (for answers, of qname and
// qtype; for NXDOMAIN and NODATA, qname is the zone) at now, and returns
// rrlPass, rrlSlip or rrlDrop.
func (l *RateLimiter) decide(class int, src netip.Addr, qtype uint16, qname []byte, now time.Time) int {
	interval := l.interval[class]
	if interval == 0 {
		return rrlPass
	}
	var key [keyBytes]byte
	key[0] = byte(class)
	a := l.network(src).Addr().As16()
	copy(key[1:], a[:])
	key[17], key[18] = byte(qtype>>8), byte(qtype)
	n := 19 + copy(key[19:], qname)
	h := maphash.Bytes(l.seed, key[:n])
	line := (h & l.lines) * lineBuckets
	s1, s2 := (h>>32)%lineBuckets, (h>>35)%(lineBuckets-1)
	if s2 >= s1 {
		s2++ // two different buckets of the line
	}
	b1, b2 := &l.buckets[line+s1], &l.buckets[line+s2]

	t := now.Sub(l.epoch).Microseconds()
	tat := min(int64(b1.Load()&tatMask), int64(b2.Load()&tatMask))
	if tat-t > burstUs-interval {
		return l.limited(b1, class, src, t)
	}
	next := max(tat, t) + interval
	raise(b1, next)
	raise(b2, next)
	return rrlPass
}

// raise moves a bucket's time up to at least tat, keeping its slip count.
func raise(b *atomic.Uint64, tat int64) {
	for {
		old := b.Load()
		if int64(old&tatMask) >= tat {
			return
		}
		if b.CompareAndSwap(old, old&^tatMask|uint64(tat)&tatMask) {
			return
		}
	}
}

// limited picks slip or drop for a limited response by the flow's slip
// count, kept in its first bucket, and logs now and then.
func (l *RateLimiter) limited(b *atomic.Uint64, class int, src netip.Addr, t int64) int {
	action := rrlDrop
	if l.cfg.Slip == 1 {
		action = rrlSlip
	} else if l.cfg.Slip > 1 {
		for {
			old := b.Load()
			count := old>>tatBits + 1
			act := rrlDrop
			if count >= uint64(l.cfg.Slip) {
				count, act = 0, rrlSlip
			}
			if b.CompareAndSwap(old, old&tatMask|count<<tatBits) {
				action = act
				break
			}
		}
	}
	if next := l.nextLog.Load(); t >= next && l.nextLog.CompareAndSwap(next, t+rrlLogEvery.Microseconds()) {
		l.cfg.Logger.Warn("response rate limiting: limiting a client network (one line per 30s at most; see edgemap_dns_rrl_responses_total)",
			zap.Stringer("network", l.network(src)), zap.String("class", rrlClassNames[class]))
	}
	return action
}
