package metrics

import "github.com/prometheus/client_golang/prometheus"

// Bounds of the artifact label: artifact names come from the files the
// operator publishes (a handful); odd or too many fold into "other".
const maxArtifacts = 32

// downloads are the download counters (binapi.DownloadObserver).
type downloads struct {
	served  *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	refused *prometheus.CounterVec
	names   *labelSet
}

func newDownloads() *downloads {
	d := &downloads{
		served: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "downloads_total",
			Help: "Binary downloads served (GET and HEAD, ranges included), by artifact."}, []string{"artifact"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "download_bytes_total",
			Help: "Bytes of binaries sent to clients, by artifact."}, []string{"artifact"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "downloads_refused_total",
			Help: "Downloads refused with 503, by reason: busy (the concurrent download cap), hashing, changed (on disk)."}, []string{"reason"}),
		names: newLabelSet(maxArtifacts),
	}
	for _, r := range []string{"busy", "hashing", "changed"} {
		d.refused.WithLabelValues(r)
	}
	return d
}

// DownloadServed counts one download of artifact that sent bytes.
func (m *Metrics) DownloadServed(artifact string, bytes int64) {
	a := m.downloads.names.label(artifact)
	m.downloads.served.WithLabelValues(a).Inc()
	if bytes > 0 {
		m.downloads.bytes.WithLabelValues(a).Add(float64(bytes))
	}
}

// DownloadRefused counts one download refused for reason.
func (m *Metrics) DownloadRefused(reason string) {
	switch reason {
	case "busy", "hashing", "changed":
	default:
		reason = otherEventType
	}
	m.downloads.refused.WithLabelValues(reason).Inc()
}
