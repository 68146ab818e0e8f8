package fetch

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// progress reports a download: a log line when a new 10 % step is reached
// and 2 s have passed since the last line (and at least every 10 s), a final
// line with the average speed, and a bar redrawn every 100 ms on a terminal.
type progress struct {
	log               *slog.Logger
	bar               io.Writer
	artifact, version string
	total             int64
	start             time.Time
	startBytes        int64 // bytes present when this run started (resume)
	cur               int64
	lastLog, lastBar  time.Time
	lastStep          int64 // last 10 % step logged
	drawn             bool
}

func newProgress(log *slog.Logger, bar io.Writer, artifact, version string, total, have int64) *progress {
	now := time.Now()
	p := &progress{log: log, bar: bar, artifact: artifact, version: version, total: total,
		start: now, startBytes: have, cur: have, lastLog: now, lastStep: have * 10 / max(total, 1)}
	log.Info("downloading", "artifact", artifact, "version", version, "size_mb", mb(total), "have_mb", mb(have))
	return p
}

func (p *progress) restart() {
	p.startBytes, p.cur, p.lastStep, p.start = 0, 0, 0, time.Now()
}

func (p *progress) rate(now time.Time) float64 {
	el := now.Sub(p.start).Seconds()
	if el <= 0 {
		return 0
	}
	return mb(p.cur-p.startBytes) / el
}

func (p *progress) update(cur int64) {
	p.cur = cur
	now := time.Now()
	step := cur * 10 / max(p.total, 1)
	since := now.Sub(p.lastLog)
	if (step > p.lastStep && since >= 2*time.Second) || since >= 10*time.Second {
		p.lastStep, p.lastLog = step, now
		p.log.Info("download progress", "artifact", p.artifact, "version", p.version,
			"percent", cur*100/max(p.total, 1), "mb", fmt.Sprintf("%.1f", mb(cur)),
			"mb_per_s", fmt.Sprintf("%.1f", p.rate(now)))
	}
	if p.bar != nil && now.Sub(p.lastBar) >= 100*time.Millisecond {
		p.lastBar = now
		p.draw(now)
	}
}

func (p *progress) draw(now time.Time) {
	const width = 30
	filled := int(p.cur * width / max(p.total, 1))
	fmt.Fprintf(p.bar, "\r%s %s [%s%s] %3d%% %7.1f/%.1f MB %6.1f MB/s ", p.artifact, p.version,
		strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		p.cur*100/max(p.total, 1), mb(p.cur), mb(p.total), p.rate(now))
	p.drawn = true
}

func (p *progress) done() {
	now := time.Now()
	if p.bar != nil {
		p.draw(now)
	}
	p.stop()
	p.log.Info("download complete", "artifact", p.artifact, "version", p.version,
		"mb", fmt.Sprintf("%.1f", mb(p.cur)), "seconds", fmt.Sprintf("%.2f", now.Sub(p.start).Seconds()),
		"mb_per_s", fmt.Sprintf("%.1f", p.rate(now)))
}

func (p *progress) stop() {
	if p.bar != nil && p.drawn {
		fmt.Fprintln(p.bar)
		p.drawn = false
	}
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }
