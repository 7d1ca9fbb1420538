#if canImport(Glibc)
import Glibc
#endif

// The two clocks sinkd reads, in one place.

/// The wall clock, in milliseconds since the epoch: what a record's acceptance time, dedupe
/// windows, retry times and ages are in (they are shown and stored; this clock can step).
public enum WallClock {
    public static func millis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}

/// The monotonic clock: intervals that must not step with the wall clock (the watchdog's
/// progress, rate-limited logs, heartbeats, fsync timing).
public enum MonotonicClock {
    public static func nanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public static func millis() -> UInt64 { nanos() / 1_000_000 }
}
