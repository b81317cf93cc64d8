package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// compareMain implements `go run ./bench compare OLD.json NEW.json`: the
// key figures of two result files side by side, NEW as a ratio to OLD.
func compareMain(w io.Writer, oldPath, newPath string) error {
	read := func(p string) (*report, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		return &r, nil
	}
	a, err := read(oldPath)
	if err != nil {
		return err
	}
	b, err := read(newPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "old: %s (%s)\nnew: %s (%s)\nratios are new/old\n\n", oldPath, a.Started.Format("2006-01-02 15:04"), newPath, b.Started.Format("2006-01-02 15:04"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tfigure\told\tnew\tnew/old\t")
	line := func(what, fig string, o, n float64) {
		fmt.Fprintf(tw, "%s\t%s\t%.4g\t%.4g\t%s\t\n", what, fig, o, n, ratio(n, o, false))
	}
	for _, nr := range b.Passthrough {
		for _, or := range a.Passthrough {
			if or.Name == nr.Name {
				line("passthrough "+nr.Name, "events/s", or.EventsPerS, nr.EventsPerS)
				line("passthrough "+nr.Name, "p99 ms", or.P99, nr.P99)
			}
		}
	}
	for _, nr := range b.Rows {
		for _, or := range a.Rows {
			if or.Load != nr.Load || or.Server != nr.Server || or.Round == nil || nr.Round == nil {
				continue
			}
			what := nr.Load + " / " + nr.Server
			line(what, "p50 ms", or.Round.P50, nr.Round.P50)
			line(what, "p99 ms", or.Round.P99, nr.Round.P99)
			line(what, "lost", float64(or.Round.Lost), float64(nr.Round.Lost))
			line(what, "CPU s", or.Round.CPUSeconds, nr.Round.CPUSeconds)
			line(what, "KB/sub", or.RSSPerSub/1024, nr.RSSPerSub/1024)
		}
	}
	for _, ns := range b.Saturation {
		for _, os := range a.Saturation {
			if os.Server == ns.Server {
				line("saturation "+ns.Server, "deliveries/s", os.Deliveries, ns.Deliveries)
			}
		}
	}
	return tw.Flush()
}
