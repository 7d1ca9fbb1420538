import NIOCore
import SinkdCore
import Testing
@testable import SinkdIngest

/// The ingest connection's decisions with plain values (issue 31: they lived in the channel
/// handler): answers in request order whatever order the WAL finishes in, the bytes a client that
/// never reads can hold, the bounds on taking lines and reading, blocked records, the close after
/// a half-close.
@Suite struct IngestConnectionStateTests {
    static func text(_ bytes: ByteBuffer?) -> String { bytes.map { String(buffer: $0) } ?? "" }
    static let rejected = IngestResponse.rejected(IngestRejection(.malformed, "bad"))

    @Test func answersLeaveInRequestOrderWhateverOrderTheyAreKnownIn() {
        var s = IngestConnectionState(maxPendingResponses: 100, maxAnswerBytes: 1 << 20)
        let a = s.expectAnswer(estimate: 70)
        s.answer(Self.rejected)  // known at once, but after a
        let c = s.expectAnswer(estimate: 70)
        #expect(s.owed == 3)
        #expect(s.takeWritable() == nil, "a is not answered yet: nothing may be written")
        s.fill(c, .accepted(id: "c", seq: 2))
        #expect(s.takeWritable() == nil, "c is ready, but a is still before it")
        s.fill(a, .accepted(id: "a", seq: 1))
        let out = Self.text(s.takeWritable())
        #expect(
            out.split(separator: "\n").map { $0.contains(#""id":"a""#) ? "a" : $0.contains(#""id":"c""#) ? "c" : "r" }
                == ["a", "r", "c"])
        #expect(s.owed == 0)
        #expect(s.takeWritable() == nil)
    }

    /// At Conductor's pace every answer is the oldest one owed when its record is durable: it is
    /// encoded into the bytes the next write sends (no array of its own), the answers after it
    /// following in order.
    @Test func anAnswerFilledAtTheHeadGoesStraightToTheNextWrite() {
        var s = IngestConnectionState(maxPendingResponses: 100, maxAnswerBytes: 1 << 20)
        let a = s.expectAnswer(estimate: 70)
        let b = s.expectAnswer(estimate: 70)
        s.fill(b, .accepted(id: "b", seq: 2))  // not at the head: waits behind a
        s.fill(a, .accepted(id: "a", seq: 1))
        #expect(s.owed == 1, "a is in the write's bytes; b still waits in its slot")
        let exact = IngestResponse.accepted(id: "a", seq: 1).encoded().count * 2
        #expect(s.answerBytes == exact)
        #expect(
            Self.text(s.takeWritable()) == #"{"id":"a","status":"accepted","seq":1}"# + "\n"
                + #"{"id":"b","status":"accepted","seq":2}"# + "\n")
        #expect(s.owed == 0)
        s.fill(a, .accepted(id: "a", seq: 1))  // filled twice: nothing changes
        #expect(s.takeWritable() == nil)
    }

    /// The buffer a write sent is used again by the next write once the channel let go of it (no
    /// heap call per write at Conductor's pace); while the channel still holds it, the next write
    /// gets a copy and the held bytes stay as they were sent.
    @Test func aSentBufferIsReusedOnlyOnceTheChannelLetGoOfIt() {
        var s = IngestConnectionState(maxPendingResponses: 100, maxAnswerBytes: 1 << 20)
        func address(_ b: ByteBuffer) -> UInt { b.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } }
        s.answer(.accepted(id: "first", seq: 1))
        let first = s.takeWritable()!
        let firstAddress = address(first)
        // The channel still holds `first` (a client that does not read): the next write must not
        // write into its bytes.
        s.answer(.accepted(id: "second", seq: 2))
        let second = s.takeWritable()!
        #expect(String(buffer: first) == #"{"id":"first","status":"accepted","seq":1}"# + "\n")
        #expect(String(buffer: second) == #"{"id":"second","status":"accepted","seq":2}"# + "\n")
        #expect(address(second) != firstAddress)
        // The channel let go of both: the next write reuses the last one's storage.
        let secondAddress = address(second)
        _ = consume first
        _ = consume second
        s.answer(.accepted(id: "third", seq: 3))
        let third = s.takeWritable()!
        #expect(String(buffer: third) == #"{"id":"third","status":"accepted","seq":3}"# + "\n")
        #expect(address(third) == secondAddress, "the kept buffer's storage, no new one")
    }

    @Test func answerBytesCountFromTheLineUntilTheKernelTookThem() {
        var s = IngestConnectionState(maxPendingResponses: 100, maxAnswerBytes: 1 << 20)
        let n = s.expectAnswer(estimate: 70)
        #expect(s.answerBytes == 70, "estimated while the record is in the WAL")
        s.fill(n, .accepted(id: "x", seq: 1))
        let exact = IngestResponse.accepted(id: "x", seq: 1).encoded().count
        #expect(s.answerBytes == exact, "exact once encoded")
        let out = s.takeWritable()!
        #expect(s.answerBytes == exact, "still owed while the channel holds it")
        s.written(out.readableBytes)
        #expect(s.answerBytes == 0)
    }

    @Test func aClientThatNeverReadsIsHeldAtTheBound() {
        var s = IngestConnectionState(maxPendingResponses: 1_000_000, maxAnswerBytes: 1000)
        var taken = 0
        while s.mayTakeLine {
            s.answer(Self.rejected)
            taken += 1
            _ = s.takeWritable()  // handed to a channel whose peer never reads: never `written`
        }
        let one = Self.rejected.encoded().count
        #expect(s.answerBytes >= 1000 && s.answerBytes < 1000 + one, "at most one answer past the bound")
        #expect(taken == (1000 + one - 1) / one)
        #expect(!s.mayRead(channelWritable: true))
    }

    @Test func pendingAnswersBoundTheLinesTaken() {
        var s = IngestConnectionState(maxPendingResponses: 3, maxAnswerBytes: 1 << 20)
        for _ in 0..<3 { _ = s.expectAnswer(estimate: 70) }
        #expect(!s.mayTakeLine)
        s.fill(0, .accepted(id: "a", seq: 1))
        _ = s.takeWritable()
        #expect(s.mayTakeLine, "one written: room for one more")
    }

    @Test func blockedRecordsStopTheConnectionUntilUnblocked() {
        var s = IngestConnectionState(maxPendingResponses: 100, maxAnswerBytes: 1 << 20)
        let n = s.expectAnswer(estimate: 70)
        let record = EventRecord(id: "r", sink: "file:a", payload: Array("1".utf8))
        s.block([record], [n])
        #expect(!s.mayTakeLine)
        #expect(!s.mayRead(channelWritable: true))
        let waiting = s.unblock()
        #expect(waiting?.records.map(\.id) == ["r"] && waiting?.numbers == [n])
        #expect(s.unblock() == nil, "once")
        #expect(s.mayTakeLine)
    }

    @Test func aHalfCloseClosesOnceEverythingIsAnswered() {
        var s = IngestConnectionState(maxPendingResponses: 100, maxAnswerBytes: 1 << 20)
        let n = s.expectAnswer(estimate: 70)
        s.inputClosed()
        #expect(!s.shouldClose, "one answer still owed")
        #expect(!s.mayRead(channelWritable: true), "nothing more to read after a half-close")
        s.fill(n, .accepted(id: "a", seq: 1))
        _ = s.takeWritable()
        #expect(s.shouldClose)
    }

    @Test func aClosedChannelTakesNothingAndAnOldSlotNumberIsIgnored() {
        var s = IngestConnectionState(maxPendingResponses: 100, maxAnswerBytes: 1 << 20)
        let n = s.expectAnswer(estimate: 70)
        s.fill(n, .accepted(id: "a", seq: 1))
        _ = s.takeWritable()
        s.fill(n, .accepted(id: "a", seq: 1))  // a slot already written: no trap, nothing changes
        #expect(s.owed == 0)
        s.channelClosed()
        #expect(!s.mayTakeLine)
    }
}
