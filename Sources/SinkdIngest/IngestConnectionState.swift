import NIOCore
import SinkdCore

/// An ingest connection's decisions, I/O-free (IngestConnectionHandler executes them): the answers
/// it owes in request order and their bytes, whether it may take another line or read more,
/// records waiting for WAL space, and when it closes.
///
/// Invariants:
/// - Exactly one answer per request, written in request order: an answer waits in its slot until
///   every answer before it is written.
/// - `answerBytes` counts every answer from the moment its line is taken until the kernel took
///   it (estimated while its record is in the WAL, exact once encoded): a client that never reads
///   holds at most `maxAnswerBytes` (plus one line's answer) of sinkd's memory, whatever it sends.
/// - No line is taken, and nothing more is read, while the connection owes `maxPendingResponses`
///   answers or `maxAnswerBytes` of them, while records wait for WAL space, or once it is closing.
struct IngestConnectionState {
    private enum Slot {
        case ready([UInt8])
        /// A record in the WAL's hands; its answer is estimated at `estimate` bytes.
        case waiting(estimate: Int)
        /// Before `head`: written.
        case written
    }

    let maxPendingResponses: Int
    let maxAnswerBytes: Int

    private var slots: [Slot] = []
    private var head = 0
    /// Absolute number of `slots[head]`.
    private var firstNumber: UInt64 = 0
    /// Encoded answers whose predecessors are all written, sent by the next `takeWritable`; its
    /// buffer is kept between writes (up to `keptReadyCapacity`): no heap call per answer.
    private var ready: [UInt8] = []
    private static let keptReadyCapacity = 4096
    /// The buffer the last write sent, kept: once the channel let go of it (at this pace the
    /// write completes before `writeAndFlush` returns) the next write reuses its storage, no
    /// heap call; while the channel still holds it, writing into it copies it first (ByteBuffer
    /// is copy-on-write), so bytes on their way out are never overwritten.
    private var sent: ByteBuffer?
    /// Bytes of answers owed: estimated for records in the WAL, encoded for ready ones, and
    /// handed to the channel but not yet taken by the kernel.
    private(set) var answerBytes = 0
    /// Records refused with `.full`/`.busy`, appended again when the WAL has room.
    private(set) var blocked: (records: [EventRecord], numbers: [UInt64])?
    /// The last pass stopped taking lines at the bound with whole lines left.
    var inputStalled = false
    /// The client half-closed: answer what it sent, then close.
    private(set) var inputEnded = false
    /// The channel is gone: nothing more is taken or written.
    private(set) var closing = false

    init(maxPendingResponses: Int, maxAnswerBytes: Int) {
        self.maxPendingResponses = maxPendingResponses
        self.maxAnswerBytes = maxAnswerBytes
    }

    /// Answers owed (taken lines not yet written).
    var owed: Int { slots.count - head }

    /// May the connection take another line?
    var mayTakeLine: Bool {
        !closing && blocked == nil && owed < maxPendingResponses && answerBytes < maxAnswerBytes
    }

    /// May it read more bytes from the socket (the channel being writable)?
    func mayRead(channelWritable: Bool) -> Bool {
        mayTakeLine && !inputStalled && !inputEnded && channelWritable
    }

    /// Everything the client sent is answered after its half-close: close.
    var shouldClose: Bool { inputEnded && !inputStalled && owed == 0 }

    // MARK: events

    mutating func inputClosed() { inputEnded = true }

    mutating func channelClosed() { closing = true }

    /// A record handed to the WAL: its answer comes later, `estimate` bytes counted now. Returns
    /// its slot's number for `fill`.
    mutating func expectAnswer(estimate: Int) -> UInt64 {
        let number = firstNumber + UInt64(owed)
        answerBytes += estimate
        slots.append(.waiting(estimate: estimate))
        return number
    }

    /// An answer known at once (a rejection, a query's answer), in its place among the others.
    mutating func answer(_ response: IngestResponse) {
        if owed == 0 {
            // Nothing before it is unanswered: straight into the bytes the next write sends.
            let before = ready.count
            response.encode(into: &ready)
            answerBytes += ready.count - before
            return
        }
        let bytes = response.encoded()
        answerBytes += bytes.count
        slots.append(.ready(bytes))
    }

    /// The answer of slot `number` (its record's WAL round finished, or it was refused).
    mutating func fill(_ number: UInt64, _ response: IngestResponse) {
        guard number >= firstNumber, number - firstNumber < UInt64(slots.count - head) else { return }
        let index = head + Int(number - firstNumber)
        guard case .waiting(let estimate) = slots[index] else { return }
        if index == head {
            // Every answer before it is written: straight into the bytes the next write sends
            // (at Conductor's pace, every answer), not into an array of its own.
            let before = ready.count
            response.encode(into: &ready)
            answerBytes += ready.count - before - estimate
            slots[index] = .written
            head += 1
            firstNumber += 1
            return
        }
        let bytes = response.encoded()
        answerBytes += bytes.count - estimate
        slots[index] = .ready(bytes)
    }

    /// The answers that can be written now, in order, in one buffer, or nil. Their bytes stay
    /// counted until `written` says the kernel took them.
    mutating func takeWritable(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer? {
        while head < slots.count, case .ready(let bytes) = slots[head] {
            ready.append(contentsOf: bytes)
            slots[head] = .written  // the answer's bytes are freed now, not when the slots are compacted
            head += 1
            firstNumber += 1
        }
        if head == slots.count {
            slots.removeAll(keepingCapacity: true)  // all answered: start over at the front
            head = 0
        } else if head > 1024, head * 2 > slots.count {
            slots.removeFirst(head)
            head = 0
        }
        guard !ready.isEmpty else { return nil }
        var out = sent ?? allocator.buffer(capacity: max(ready.count, 256))
        sent = nil  // one reference fewer: the storage is ours alone if the channel let go of it
        out.clear()
        out.writeBytes(ready)
        if out.capacity <= Self.keptReadyCapacity { sent = out }
        if ready.capacity > Self.keptReadyCapacity {
            ready = []  // a burst's answers: not kept per connection
        } else {
            ready.removeAll(keepingCapacity: true)
        }
        return out
    }

    /// `count` bytes of answers left sinkd's hands (the kernel took them, or the connection is
    /// gone and nobody will).
    mutating func written(_ count: Int) {
        answerBytes -= count
    }

    /// The WAL had no room for `records` (from the first refused one on): they wait.
    mutating func block(_ records: [EventRecord], _ numbers: [UInt64]) {
        blocked = (records, numbers)
    }

    /// The WAL has room again: the waiting records, to append now.
    mutating func unblock() -> (records: [EventRecord], numbers: [UInt64])? {
        defer { blocked = nil }
        return blocked
    }
}
