import Testing
@testable import SinkdCore

@Suite struct UnitsTests {
    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)), ("30s", .seconds(30)), ("10m", .seconds(600)),
        ("24h", .seconds(86_400)), ("0", .zero), ("0s", .zero), ("1h30m", .seconds(5_400)),
        (" 5s ", .seconds(5)), ("1m30s500ms", .milliseconds(90_500)),
    ])
    func parsesDurations(text: String, expected: Duration) {
        #expect(Units.parseDuration(text) == expected)
    }

    @Test(arguments: ["", "thirty", "30", "5 s", "1.5s", "-1s", "10d", "s", "999999999999999h"])
    func rejectsBadDurations(text: String) {
        #expect(Units.parseDuration(text) == nil)
    }

    @Test(arguments: [
        ("64MiB", 64 << 20), ("10GiB", 10 << 30), ("1048576", 1 << 20), ("256KiB", 256 << 10),
        ("512B", 512), ("1KB", 1000), ("2MB", 2_000_000), ("1TiB", 1 << 40), ("0", 0),
    ])
    func parsesSizes(text: String, expected: Int) {
        #expect(Units.parseSize(text) == expected)
    }

    @Test(arguments: ["", "lots", "64mib", "1.5GiB", "-1", "MiB", "99999999999999999999"])
    func rejectsBadSizes(text: String) {
        #expect(Units.parseSize(text) == nil)
    }

    @Test func formatsForHumans() {
        #expect(Units.formatSize(64 << 20) == "64MiB")
        #expect(Units.formatSize(1536) == "1.5KiB")
        #expect(Units.formatSize(100) == "100B")
        #expect(Units.formatDuration(.milliseconds(250)) == "250ms")
        #expect(Units.formatDuration(.seconds(5_400)) == "1h30m")
        #expect(Units.formatDuration(.zero) == "0s")
    }
}
