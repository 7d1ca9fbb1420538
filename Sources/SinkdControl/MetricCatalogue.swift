import CoreMetrics
import Prometheus

/// Every series sinkd exports, with its HELP text: the one place the exposition, the docs and
/// `promtool check metrics` agree on. A series recorded through swift-metrics anywhere in sinkd
/// gets its HELP line from here (`HelpingMetricsFactory`); one missing here is caught by
/// MetricsEndpointTests (promtool flags a series without HELP).
public enum MetricCatalogue {
    public static let help: [String: String] = [
        "sinkd_ingest_records_total": "Records answered accepted or duplicate, by result",
        "sinkd_ingest_rejected_total": "Requests rejected at ingest, by protocol error code",
        "sinkd_delivered_total": "Records the sink's broker confirmed",
        "sinkd_retried_total": "Failed delivery attempts that will be retried",
        "sinkd_dead_lettered_total": "Records moved to the dead-letter store",
        "sinkd_delivery_latency_seconds": "Time from a record's acceptance to its broker's confirmation",
        "sinkd_backlog_records": "Records accepted and not yet delivered or dead-lettered",
        "sinkd_backlog_bytes": "Bytes of the records not yet delivered or dead-lettered",
        "sinkd_backlog_oldest_seconds": "Age of the oldest record not yet delivered or dead-lettered",
        "sinkd_sink_up": "0 while the sink's connection is down, else 1",
        "sinkd_wal_bytes": "Bytes in WAL segment files",
        "sinkd_wal_segments": "WAL segment files",
        "sinkd_wal_next_seq": "The sequence number the next accepted record gets",
        "sinkd_wal_max_bytes": "wal.max_size: the WAL's size limit in bytes",
        "sinkd_wal_fsync_seconds": "Duration of the WAL's fdatasync calls",
        "sinkd_wal_corrupt_frames_at_start": "Corrupt frames skipped by the last recovery",
        "sinkd_wal_corrupt_frames_total": "Damaged frames met by readers while running (each copied to quarantine/)",
        "sinkd_wal_lost_records_total":
            "Acknowledged records that can no longer be delivered (damaged or missing from the WAL)",
        "sinkd_wal_write_failures_total": "Failed WAL writes, fdatasyncs, rollovers and rewrites",
        "sinkd_wal_rewritten_records_total":
            "Acknowledged records written again after their fdatasync failed (fsync: interval)",
        "sinkd_wal_records_at_risk_total":
            "Acknowledged records whose fdatasync failed with no copy to write again (fsync: never)",
        "sinkd_wal_disk_full": "1 while the WAL's disk is full and records are held, else 0",
        "sinkd_wal_pending_bytes": "Bytes of records held in memory, not yet in a segment",
        "process_start_time_seconds": "When this sinkd process started, in seconds since the Unix epoch",
    ]

    static func help(for name: String) -> String { help[name] ?? "" }
}

/// swift-prometheus's factory registers every series with an empty HELP; this one asks the
/// catalogue. Only what sinkd records is made here (counters and timers); the rest is delegated.
struct HelpingMetricsFactory: MetricsFactory {
    let inner: PrometheusMetricsFactory
    var registry: PrometheusCollectorRegistry { inner.registry }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(
            descriptor: MetricNameDescriptor(
                metricName: label, unitName: "", helpText: MetricCatalogue.help(for: label)), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(
            descriptor: MetricNameDescriptor(
                metricName: label, unitName: "", helpText: MetricCatalogue.help(for: label)), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let buckets = inner.durationHistogramBuckets[label] ?? inner.defaultDurationHistogramBuckets
        return registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(
                metricName: label, unitName: "", helpText: MetricCatalogue.help(for: label)),
            labels: dimensions, buckets: buckets)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        inner.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        inner.makeMeter(label: label, dimensions: dimensions)
    }

    func destroyCounter(_ handler: any CounterHandler) { inner.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        inner.destroyFloatingPointCounter(handler)
    }
    func destroyRecorder(_ handler: any RecorderHandler) { inner.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { inner.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { inner.destroyTimer(handler) }
}
