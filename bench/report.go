package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// ratio formats v/base as "(1.23x)"; "(=)" when both are zero, "" for the
// baseline itself.
func ratio(v, base float64, isBase bool) string {
	switch {
	case isBase:
		return ""
	case base == 0 && v == 0:
		return " (=)"
	case base == 0:
		return " (n/a)"
	}
	return fmt.Sprintf(" (%.2fx)", v/base)
}

func cell(format string, v, base float64, haveBase, isBase bool) string {
	s := fmt.Sprintf(format, v)
	if haveBase {
		s += ratio(v, base, isBase)
	}
	return s
}

func printReport(w io.Writer, rep *report) {
	fmt.Fprintf(w, "\ncaddy-realtime benchmark, %s%s\n", rep.Started.UTC().Format("2006-01-02 15:04:05 UTC"), map[bool]string{true: " (BENCH_QUICK subset)", false: ""}[rep.Quick])
	fmt.Fprintf(w, "caddy: %s; %s; %d CPUs; open-file limit %d\n", rep.CaddyBin, rep.GoVersion, rep.CPUs, rep.NoFile)
	fmt.Fprintf(w, "load average at start %s, at end %s; CPU used by processes outside the benchmark during the run: %.1f s of %.1f s wall time x %d CPUs\n",
		rep.LoadStart, rep.LoadEnd, rep.OtherCPU, rep.WallSeconds, rep.CPUs)
	if noisy(rep) {
		fmt.Fprintf(w, "WARNING: other processes took %.0f%% of the machine during this run: figures are noisy, rerun on an idle machine to compare\n",
			100*rep.OtherCPU/(rep.WallSeconds*float64(rep.CPUs)))
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "NOTE: %s\n", n)
	}

	if len(rep.Passthrough) > 0 || rep.PassErr != "" {
		fmt.Fprintf(w, "\n== SSE passthrough: realtime + reverse_proxy vs plain reverse_proxy (same upstream, same run) ==\n")
		if rep.PassErr != "" {
			fmt.Fprintf(w, "error: %s\n", rep.PassErr)
		}
		printPassthrough(w, rep.Passthrough, rep.CutShort, noisy(rep))
	}

	if len(rep.Rows) > 0 {
		fmt.Fprintf(w, "\n== Hub vs Nchan: one channel, %d-byte messages; each figure with its ratio to the Nchan row of the same load ==\n", payloadSize)
		printRows(w, rep.Rows)
	}
	if len(rep.Saturation) > 0 {
		fmt.Fprintf(w, "\n== Saturation: highest rate on one channel of SSE subscribers with no loss, no duplicate, p99 under the limit: 500 ms at 10,000 subscribers, 100 ms in a quick run (rate doubled per step) ==\n")
		printSaturation(w, rep.Saturation)
	}
	if len(rep.Churn) > 0 || rep.ChurnErr != "" {
		fmt.Fprintf(w, "\n== Channel churn: batches of %d SSE subscriptions to %d fresh channels each, closed once live (hub on Redis); must stay flat as channels grow ==\n", churnRequests, churnWidth)
		if rep.ChurnErr != "" {
			fmt.Fprintf(w, "error: %s\n", rep.ChurnErr)
		}
		printChurn(w, rep.Churn)
	}
	if len(rep.Presence) > 0 || rep.PresenceErr != "" {
		fmt.Fprintf(w, "\n== Presence: SSE subscribers, each its own member, over %d channels; presence and notify webhooks on, against the same load on channels without a rule ==\n", presenceChannels)
		if rep.PresenceErr != "" {
			fmt.Fprintf(w, "error: %s\n", rep.PresenceErr)
		}
		printPresence(w, rep.Presence)
	}
	fmt.Fprintln(w)
}

func printPassthrough(w io.Writer, rows []*passResult, cutShort, noisyRun bool) {
	if len(rows) == 0 {
		return
	}
	var base *passResult
	for _, r := range rows {
		if r.Name == "plain reverse_proxy" {
			base = r
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "setup\tevents/s (flood)\tp50 ms\tp99 ms\tmax ms\tsamples\tmissing\tserver CPU µs/event\t")
	for _, r := range rows {
		isBase := r == base
		hb := base != nil
		var bEPS, bP50, bP99 float64
		if hb {
			bEPS, bP50, bP99 = base.EventsPerS, base.P50, base.P99
		}
		cpu := "-"
		if r.CPUPerEvent > 0 {
			var bc float64
			if hb {
				bc = base.CPUPerEvent
			}
			cpu = cell("%.2f", r.CPUPerEvent, bc, hb, isBase)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%d\t%d\t%s\t\n", r.Name,
			cell("%.0f", r.EventsPerS, bEPS, hb, isBase),
			cell("%.3f", r.P50, bP50, hb, isBase),
			cell("%.3f", r.P99, bP99, hb, isBase),
			r.Max, r.Samples, r.Missing, cpu)
	}
	tw.Flush()
	for _, r := range rows {
		if r.Err != "" {
			fmt.Fprintf(w, "%s: error: %s\n", r.Name, r.Err)
		}
	}
	var rt *passResult
	for _, r := range rows {
		if r.Name == "realtime + reverse_proxy" {
			rt = r
		}
	}
	if base != nil && rt != nil && base.EventsPerS > 0 {
		cost := 1 - rt.EventsPerS/base.EventsPerS
		// the verdict compares the median of each side's per-round p99s,
		// as events/s compares per-round medians: on this shared machine
		// one stalled round can move a pooled p99 by milliseconds
		added := median(rt.P99Rounds) - median(base.P99Rounds)
		verdict := "PASS"
		if cost >= 0.05 || added >= 1 {
			verdict = "FAIL"
		}
		if cutShort || base.Err != "" || rt.Err != "" {
			verdict = "no verdict (run cut short or errors)"
		} else if noisyRun {
			verdict += " (unreliable: the machine was busy with other work, see WARNING)"
		}
		fmt.Fprintf(w, "passthrough: events/s ratio %.3f (cost %.1f%%, target < 5%%); p99 added %+.3f ms (median of rounds; target < 1 ms), %+.3f ms pooled; p50 added %+.3f ms: %s\n",
			rt.EventsPerS/base.EventsPerS, cost*100, added, rt.P99-base.P99, rt.P50-base.P50, verdict)
		fmt.Fprintf(w, "paced rounds (p99 ms): plain %s; realtime %s\n", fmtRounds2(base.P99Rounds), fmtRounds2(rt.P99Rounds))
		fmt.Fprintf(w, "flood rounds (events/s): plain %s; realtime %s\n", fmtRounds(base.Rounds), fmtRounds(rt.Rounds))
		if base.CPUPerEvent > 0 && rt.CPUPerEvent > 0 {
			fmt.Fprintf(w, "server CPU per event: realtime/plain %.2f (less sensitive to scheduling noise than events/s)\n", rt.CPUPerEvent/base.CPUPerEvent)
		}
	}
}

func fmtRounds2(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(s, ", ")
}

func fmtRounds(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}

func printRows(w io.Writer, rows []*row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "load\tserver\tconnected\tconn fail\tconn s\tconn CPU s\tp50 ms\tp99 ms\tmax ms\tlost\tdup\tCPU s\tRSS max MB\tKB/sub\tgen CPU s\t")
	// baseline per load
	base := map[string]*row{}
	for _, r := range rows {
		if r.Baseline && r.Round != nil {
			base[r.Load] = r
		}
	}
	last := ""
	for _, r := range rows {
		if r.Load != last && last != "" {
			fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t")
		}
		last = r.Load
		if r.Round == nil {
			why := r.Unavailable
			if why == "" {
				why = "no result"
			}
			short := "unavailable"
			if strings.HasPrefix(why, "nchan unavailable") {
				short = "nchan unavailable"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s\t\t\t\t\t\t\t\t\t\t\t\n", r.Load, r.Server, r.Connected, r.N, r.ConnectFails, short)
			continue
		}
		b := base[r.Load]
		hb := b != nil
		isBase := r.Baseline
		var bb row
		var br roundResult
		if hb {
			bb, br = *b, *b.Round
		}
		x := r.Round
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t\n", r.Load, r.Server,
			r.Connected, r.N,
			cell("%.0f", float64(r.ConnectFails), float64(bb.ConnectFails), hb, isBase),
			cell("%.1f", r.ConnectSecs, bb.ConnectSecs, hb, isBase),
			cell("%.2f", r.ConnectCPU, bb.ConnectCPU, hb, isBase),
			cell("%.2f", x.P50, br.P50, hb, isBase),
			cell("%.2f", x.P99, br.P99, hb, isBase),
			cell("%.1f", x.Max, br.Max, hb, isBase),
			cell("%.0f", float64(x.Lost), float64(br.Lost), hb, isBase),
			cell("%.0f", float64(x.Dup), float64(br.Dup), hb, isBase),
			cell("%.2f", x.CPUSeconds, br.CPUSeconds, hb, isBase),
			cell("%.1f", float64(x.RSSMax)/1e6, float64(br.RSSMax)/1e6, hb, isBase),
			cell("%.1f", r.RSSPerSub/1024, bb.RSSPerSub/1024, hb, isBase),
			x.GenCPUSeconds)
	}
	tw.Flush()
	for _, r := range rows {
		var notes []string
		if r.Unavailable != "" {
			notes = append(notes, truncate(r.Unavailable, 160))
		} else if r.ConnectErr != "" {
			notes = append(notes, "first connect error: "+firstLine(r.ConnectErr))
		}
		if r.Round != nil {
			if r.Round.OtherCPU > 0.2*r.Round.PublishSecond {
				notes = append(notes, fmt.Sprintf("other processes on the machine used %.1f CPU s during this round: noisy", r.Round.OtherCPU))
			}
			if r.Round.RedisCPU > 0 {
				notes = append(notes, fmt.Sprintf("redis-server CPU %.2f s (not in CPU s)", r.Round.RedisCPU))
			}
			if r.Round.PubErrors > 0 {
				notes = append(notes, fmt.Sprintf("%d publish errors (%s)", r.Round.PubErrors, firstLine(r.Round.PubErr)))
			}
			if r.Round.Dropped > 0 {
				notes = append(notes, fmt.Sprintf("%d subscribers disconnected during the round", r.Round.Dropped))
			}
			if r.Round.Stray > 0 {
				notes = append(notes, fmt.Sprintf("%d unparsable/stray messages", r.Round.Stray))
			}
			if r.Round.PubLateMax > 50 {
				notes = append(notes, fmt.Sprintf("publisher up to %.0f ms behind schedule", r.Round.PubLateMax))
			}
		}
		if len(notes) > 0 {
			fmt.Fprintf(w, "  %s / %s: %s\n", r.Load, r.Server, strings.Join(notes, "; "))
		}
	}
	if len(base) == 0 {
		fmt.Fprintln(w, "  (no Nchan row completed: no ratios)")
	}
}

func printSaturation(w io.Writer, rows []*satRow) {
	var base *satRow
	for _, r := range rows {
		if r.Baseline && r.Err == "" {
			base = r
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "server\tsubscribers\tbest msg/s\tdeliveries/s\tlimited by\tserver CPU\tgenerator CPU\t")
	for _, r := range rows {
		if r.Err != "" {
			fmt.Fprintf(tw, "%s\t%d/%d\t-\t-\t%s\t\t\t\n", r.Server, r.Connected, r.N, truncate(r.Err, 70))
			continue
		}
		hb := base != nil
		var bd float64
		if hb {
			bd = base.Deliveries
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%.0f\t%s\t%s\t%.0f%%\t%.0f%%\t\n", r.Server, r.Connected, r.N, r.BestRate,
			cell("%.0f", r.Deliveries, bd, hb, r == base), r.Limit, 100*r.ServerCPU, 100*r.GenCPU)
	}
	tw.Flush()
	fmt.Fprintln(w, "  CPU columns: share of one core at the best rate; a generator near 100% means the load generator, not the server, set the limit")
}

func truncate(s string, n int) string {
	s = firstLine(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// noisy reports whether processes outside the benchmark took more than 10%
// of the machine during the run.
func noisy(rep *report) bool {
	return rep.WallSeconds > 0 && rep.OtherCPU > 0.1*rep.WallSeconds*float64(rep.CPUs)
}
