package metrics

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The batch histogram files n observations at once, in Prometheus'
// "less than or equal" buckets.
func TestBatchHistogram(t *testing.T) {
	h := newBatchHistogram("test_seconds", "test", []float64{0.01, 0.1, 1})
	h.observe(0.01, 3) // on a bound: that bucket
	h.observe(0.05, 2)
	h.observe(5, 1) // +Inf only
	reg := prometheus.NewRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "test_seconds" {
		t.Fatalf("gathered %v", mfs)
	}
	hist := mfs[0].GetMetric()[0].GetHistogram()
	if hist.GetSampleCount() != 6 {
		t.Errorf("count %d, want 6", hist.GetSampleCount())
	}
	if want := 0.01*3 + 0.05*2 + 5; math.Abs(hist.GetSampleSum()-want) > 1e-9 {
		t.Errorf("sum %v, want %v", hist.GetSampleSum(), want)
	}
	want := map[float64]uint64{0.01: 3, 0.1: 5, 1: 5}
	for _, b := range hist.GetBucket() {
		if b.GetCumulativeCount() != want[b.GetUpperBound()] {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want[b.GetUpperBound()])
		}
	}
}
