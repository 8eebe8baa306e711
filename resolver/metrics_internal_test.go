package resolver

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// answerLatency counts a batch in one addition, and must expose what
// client_golang's own Histogram would after one observation per answer:
// the same buckets ("le": a value on a bound counts in that bucket), count
// and sum.
func TestAnswerLatencyAsClientGolangCounts(t *testing.T) {
	ours := newAnswerLatency()
	theirs := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edgemap_dns_answer_seconds", Buckets: ours.bounds})
	batches := []struct {
		n    int
		took time.Duration
	}{
		{1, 0}, {3, 500 * time.Nanosecond}, {2, time.Microsecond}, {5, 1001 * time.Nanosecond},
		{7, 2 * time.Microsecond}, {64, 37 * time.Microsecond}, {1, 32768 * time.Microsecond},
		{2, 40 * time.Millisecond}, {1, time.Hour}, {0, time.Millisecond}, {4, -time.Microsecond},
	}
	for _, b := range batches {
		ours.observe(b.n, b.took)
		for range b.n {
			theirs.Observe(max(b.took, 0).Seconds())
		}
	}
	got, want := histogramOf(t, ours), histogramOf(t, theirs)
	if got.GetSampleCount() != want.GetSampleCount() {
		t.Errorf("count %d, want %d", got.GetSampleCount(), want.GetSampleCount())
	}
	if math.Abs(got.GetSampleSum()-want.GetSampleSum()) > 1e-9 {
		t.Errorf("sum %v, want %v", got.GetSampleSum(), want.GetSampleSum())
	}
	if len(got.GetBucket()) != len(want.GetBucket()) {
		t.Fatalf("%d buckets, want %d", len(got.GetBucket()), len(want.GetBucket()))
	}
	for i, w := range want.GetBucket() {
		g := got.GetBucket()[i]
		if g.GetUpperBound() != w.GetUpperBound() || g.GetCumulativeCount() != w.GetCumulativeCount() {
			t.Errorf("bucket %d: le %v holds %d, want le %v holding %d", i, g.GetUpperBound(), g.GetCumulativeCount(), w.GetUpperBound(), w.GetCumulativeCount())
		}
	}
	if got.GetSampleCount() != 90 {
		t.Errorf("count %d, want the 90 answers observed", got.GetSampleCount())
	}
}

func histogramOf(t *testing.T, c prometheus.Collector) *dto.Histogram {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v, want one histogram", mfs)
	}
	return mfs[0].GetMetric()[0].GetHistogram()
}
