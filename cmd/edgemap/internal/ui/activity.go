package ui

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgemap/edgemap/mapping"
)

// Activity counts property answers over the last hour, one column of
// counters per minute: by the edge that answered first, by the client's
// country and by its GeoIP place (the place the decision put it: a
// measured target's, else its own).
//
// Everything is allocated once, in fixed-size arrays: 61 minute columns of
// 2 049 edge, 677 country and 2 049 place counters, 2.3 MB. Edges and
// places find their counters through small open-addressing tables; when a
// table has no free slot near a key, the answer is counted under "other".
// A key whose counters stayed at zero for the whole hour gives its slot
// back at the next minute.
//
// Answered is the query path: safe for concurrent use, no lock, no
// allocation: one hash, a few atomic loads and three atomic adds. The
// minute clock (Start) is one goroutine; the readers (the dashboard's
// handlers) may run concurrently with both. Counts are exact but for two
// races, each at most a few answers once per idle hour, which do not
// matter to a dashboard: an answer that loads the current minute just as it advances
// counts in the one before, and an answer racing the release of its key's
// idle slot may be counted under the next key to claim it.
type Activity struct {
	cur     atomic.Int32 // the minute column answers go to
	ticks   atomic.Int64 // minutes since start, for how much of the hour is counted
	started time.Time

	// mu serializes the clock's release of idle slots with readers: a
	// slot is never given back, and so never refilled by an answer, while
	// a reader reads its key. Answers never take it.
	mu     sync.Mutex
	edges  keyTable
	places keyTable

	minutes [ringLen]minuteCounts
}

const (
	// windowMinutes is how far back the counts go: the current minute and
	// the 59 before it.
	windowMinutes = 60
	// ringLen has one column more than the window: the column that is
	// cleared before the clock moves onto it is never one being read.
	ringLen = windowMinutes + 1
	// edgeSlots bounds the edges counted apart: 2 048, twice the large map.
	edgeSlots = 2048
	// placeSlots bounds the places counted apart in one hour. A GeoIP City
	// database has ~100 000 places; the busiest fill the table and later
	// ones go to "other" until an idle slot is given back.
	placeSlots = 2048
	// countrySlots is one counter per two-letter code, AA to ZZ, and one
	// for answers without a country.
	countrySlots = 26*26 + 1
	noCountry    = countrySlots - 1
	// probeLen is how many slots from its hash a key may sit in.
	probeLen = 8
)

// minuteCounts is one minute's counters; index edgeSlots (placeSlots) of
// edges (places) is "other".
type minuteCounts struct {
	edges     [edgeSlots + 1]atomic.Uint64
	countries [countrySlots]atomic.Uint64
	places    [placeSlots + 1]atomic.Uint64
}

// keyTable maps keys (edge ids, places) to counter indices. Slot i is
// states[i] and keys[i]. A slot's key is written by the answer that
// claims the slot (state slotFree to slotClaimed) before it publishes the
// key's hash in its state, and read by readers only after they load that
// hash, holding Activity.mu; only the minute clock frees a slot, holding
// it too. Answers compare hashes, never the keys: two keys sharing a
// 64-bit hash would be counted as one. The states are apart from the keys
// because every answer reads them: 16 KiB of them stay in the cache where
// the slots with their keys, 112 KiB, did not.
type keyTable struct {
	states []atomic.Uint64 // slotFree, slotClaimed or the key's hash
	keys   []key
	mask   uint64
	// counters are a minute's counters of the table's keys, by index;
	// index len(states) is "other".
	counters func(*minuteCounts) []atomic.Uint64
}

// key is what a slot counts: an edge, or a place.
type key struct {
	edge   string
	place  *mapping.Place
	client netip.Addr // one client the place was decided for, to ask the map about
}

const (
	slotFree    = 0
	slotClaimed = 1
)

// NewActivity makes the counters; the hour starts at now.
func NewActivity(now time.Time) *Activity {
	return &Activity{
		started: now,
		edges: keyTable{states: make([]atomic.Uint64, edgeSlots), keys: make([]key, edgeSlots), mask: edgeSlots - 1,
			counters: func(m *minuteCounts) []atomic.Uint64 { return m.edges[:] }},
		places: keyTable{states: make([]atomic.Uint64, placeSlots), keys: make([]key, placeSlots), mask: placeSlots - 1,
			counters: func(m *minuteCounts) []atomic.Uint64 { return m.places[:] }},
	}
}

// Answered counts one answer: its first edge, and the place the decision
// put the client (nil when unknown). It implements resolver.ActivityObserver.
func (a *Activity) Answered(e *mapping.Edge, p *mapping.Place, client netip.Addr) {
	m := &a.minutes[a.cur.Load()]
	m.edges[a.index(&a.edges, fixHash(e.IDHash()), key{edge: e.ID})].Add(1)
	m.countries[countryIndex(p)].Add(1)
	if p != nil {
		m.places[a.index(&a.places, placeHash(p), key{place: p, client: client})].Add(1)
	}
}

// index is the counter index of the key with hash h in t: its slot, or a
// free one it claims and fills with key's fields, or "other".
func (a *Activity) index(t *keyTable, h uint64, k key) int {
	i, claimed := t.find(h)
	switch {
	case i < 0:
		return len(t.states)
	case claimed:
		t.keys[i] = k
		// Zeroed in every minute, in case an answer raced the release
		// of the slot's previous key. Once per new key.
		for m := range a.minutes {
			t.counters(&a.minutes[m])[i].Store(0)
		}
		t.states[i].Store(h)
	}
	return i
}

// find returns the slot holding hash h, or claims a free one near it
// (claimed: the caller fills it and publishes h), or -1.
func (t *keyTable) find(h uint64) (i int, claimed bool) {
	for n := range uint64(probeLen) {
		i := int((h + n) & t.mask)
		s := &t.states[i]
		switch st := s.Load(); {
		case st == h:
			return i, false
		case st == slotFree && s.CompareAndSwap(slotFree, slotClaimed):
			return i, true
		}
	}
	return -1, false
}

// fixHash keeps a hash clear of the two state values that are not hashes.
func fixHash(h uint64) uint64 {
	if h <= slotClaimed {
		h += 2
	}
	return h
}

// placeHash keys a place by its coordinates, which stay the same across
// GeoIP reloads (a reload makes new Place values).
func placeHash(p *mapping.Place) uint64 {
	h := math.Float64bits(p.Lat)*0x9e3779b97f4a7c15 ^ math.Float64bits(p.Lon)
	// splitmix64's finalizer: neighbouring coordinates land far apart.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return fixHash(h)
}

// countryIndex is the counter of p's ISO country code, noCountry without.
func countryIndex(p *mapping.Place) int {
	if p == nil || len(p.Country) != 2 {
		return noCountry
	}
	c0, c1 := p.Country[0]|0x20, p.Country[1]|0x20 // lower case
	if c0 < 'a' || c0 > 'z' || c1 < 'a' || c1 > 'z' {
		return noCountry
	}
	return int(c0-'a')*26 + int(c1-'a')
}

func countryCode(i int) string {
	if i == noCountry {
		return unknownKey
	}
	return string([]byte{byte('A' + i/26), byte('A' + i%26)})
}

// Start starts the minute clock; stop stops it and returns once it has.
func (a *Activity) Start() (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				a.advance()
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// advance starts a new minute: it clears the column an hour old, moves
// answers onto it, and gives back the slots of keys idle for the hour.
func (a *Activity) advance() {
	next := (a.cur.Load() + 1) % ringLen
	m := &a.minutes[next]
	for i := range m.edges {
		m.edges[i].Store(0)
	}
	for i := range m.countries {
		m.countries[i].Store(0)
	}
	for i := range m.places {
		m.places[i].Store(0)
	}
	a.cur.Store(next)
	a.ticks.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.release(&a.edges)
	a.release(&a.places)
}

func (a *Activity) release(t *keyTable) {
	for i := range t.states {
		s := &t.states[i]
		h := s.Load()
		if h <= slotClaimed {
			continue
		}
		// Idle over the window; the column after the current one is out
		// of it, to be cleared next.
		idle := true
		cur := int(a.cur.Load())
		for age := range windowMinutes {
			if t.counters(&a.minutes[(cur-age+ringLen)%ringLen])[i].Load() != 0 {
				idle = false
				break
			}
		}
		if idle {
			s.CompareAndSwap(h, slotFree)
		}
	}
}

// Series is one key's answers: the hour's total and one count per minute,
// oldest first, the current minute last; a place's has its location.
type Series struct {
	Key       string   `json:"key"`
	Total     uint64   `json:"total"`
	PerMinute []uint64 `json:"per_minute"`
	Lat       *float64 `json:"lat,omitempty"`
	Lon       *float64 `json:"lon,omitempty"`

	place  *mapping.Place
	client netip.Addr
}

// ActivityView is the hour's counts, busiest first.
type ActivityView struct {
	Minutes int `json:"minutes"`
	// Covered is how many of those minutes the server has counted: fewer
	// in its first hour.
	Covered int       `json:"covered_minutes"`
	Total   uint64    `json:"total"`
	Edges   []Series  `json:"edges"`
	Regions []Series  `json:"regions"`
	Places  []Series  `json:"places"`
	Since   time.Time `json:"since"`
}

// view reads the counters: every key's series, busiest first. Readers do
// not stop answers; a view taken while they count is a few answers behind.
func (a *Activity) view(now time.Time) ActivityView {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := int(a.cur.Load())
	// Column cur is the current minute, cur-1 the one before, ...
	column := func(age int) *minuteCounts { return &a.minutes[(cur-age+ringLen)%ringLen] }
	sum := func(key string, counter func(*minuteCounts) uint64) Series {
		s := Series{Key: key, PerMinute: make([]uint64, windowMinutes)}
		for age := range windowMinutes {
			n := counter(column(age))
			s.PerMinute[windowMinutes-1-age] = n
			s.Total += n
		}
		return s
	}
	v := ActivityView{Minutes: windowMinutes, Covered: int(min(a.ticks.Load()+1, windowMinutes)), Since: a.started}
	if v.Covered == windowMinutes {
		v.Since = now.Add(-windowMinutes * time.Minute)
	}
	// Two slots of one key (two answers claimed one each at once) add up;
	// keys are told apart by their hash (the country's index for regions,
	// slotClaimed, which no key has, for "other").
	byKey := map[uint64]int{}
	add := func(list []Series, key uint64, s Series) []Series {
		if s.Total == 0 {
			return list
		}
		if j, ok := byKey[key]; ok {
			for m := range s.PerMinute {
				list[j].PerMinute[m] += s.PerMinute[m]
			}
			list[j].Total += s.Total
			return list
		}
		byKey[key] = len(list)
		return append(list, s)
	}
	for i := range a.edges.states {
		if h := a.edges.states[i].Load(); h > slotClaimed {
			v.Edges = add(v.Edges, h, sum(a.edges.keys[i].edge, func(m *minuteCounts) uint64 { return m.edges[i].Load() }))
		}
	}
	v.Edges = add(v.Edges, slotClaimed, sum(otherKey, func(m *minuteCounts) uint64 { return m.edges[edgeSlots].Load() }))
	clear(byKey)
	for i := range countrySlots {
		v.Regions = add(v.Regions, uint64(i), sum(countryCode(i), func(m *minuteCounts) uint64 { return m.countries[i].Load() }))
	}
	clear(byKey)
	for i := range a.places.states {
		if h := a.places.states[i].Load(); h > slotClaimed {
			sl := &a.places.keys[i]
			s := sum(placeName(sl.place), func(m *minuteCounts) uint64 { return m.places[i].Load() })
			s.place, s.client = sl.place, sl.client
			v.Places = add(v.Places, h, s)
		}
	}
	v.Places = add(v.Places, slotClaimed, sum(otherKey, func(m *minuteCounts) uint64 { return m.places[placeSlots].Load() }))
	for _, s := range v.Regions {
		v.Total += s.Total
	}
	busiest := func(a, b Series) int { return cmp.Or(cmp.Compare(b.Total, a.Total), cmp.Compare(a.Key, b.Key)) }
	slices.SortFunc(v.Edges, busiest)
	slices.SortFunc(v.Regions, busiest)
	slices.SortFunc(v.Places, busiest)
	return v
}

// otherKey names the answers of keys that found no slot; unknownKey those
// without a country.
const (
	otherKey   = "(other)"
	unknownKey = "(unknown)"
)

// placeName is how the dashboard names a place: "City, CC", or the
// country alone.
func placeName(p *mapping.Place) string {
	switch {
	case p == nil:
		return ""
	case p.City == "":
		return p.Country
	}
	return p.City + ", " + p.Country
}
