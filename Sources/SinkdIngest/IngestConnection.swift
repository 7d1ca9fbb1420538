import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import SinkdCore
import SinkdWAL
import Synchronization

extension NIOLoopBound {
    /// Runs `body` with the value on its event loop.
    func execute(_ body: @escaping @Sendable (Value) -> Void) {
        eventLoop.execute { body(self.value) }
    }
}

/// One client connection: splits request lines, appends records to the WAL in batches (one per
/// read burst), and writes exactly one response per request, in request order, each `accepted`
/// only after its record is durable. Back-pressure by not reading and by not taking the next
/// line: while it owes `maxPendingResponses` answers or `maxAnswerBytes` of them (counted from
/// the moment a line is taken until the kernel has the answer), or while the WAL is full. So one
/// read burst of tiny bad lines cannot make a client that never reads cost more than the bound.
final class IngestConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let shared: IngestContext
    /// The decisions: answers owed and their bytes, bounds, blocked records (I/O-free).
    private var state: IngestConnectionState
    private var batch: [EventRecord] = []
    /// The answer slots of `batch`'s records: one run unless a refused line fell between them.
    private var batchSlots = IncreasingRun<UInt64>()
    /// Bytes read and not yet split into lines.
    private var input: ByteBuffer?
    private var splitter: LineSplitter
    private var pumping = false
    private var pumpAgain = false
    private var context: ChannelHandlerContext?

    init(shared: IngestContext) {
        self.shared = shared
        self.splitter = LineSplitter(maxLineBytes: shared.maxRecordBytes)
        self.state = IngestConnectionState(
            maxPendingResponses: shared.maxPendingResponses, maxAnswerBytes: shared.maxAnswerBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        shared.state.connectionOpened()
        context.read()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        shared.state.connectionClosed()
        state.channelClosed()
        input = nil  // nobody is left to answer: unanswered lines were never acknowledged
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if input == nil || input!.readableBytes == 0 {
            input = bytes
        } else {
            input!.writeBuffer(&bytes)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        pump(context: context)
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        pump(context: context)
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent, state.owed == 0 {
            shared.logger.debug("closing an idle ingest connection")
            context.close(promise: nil)
            return
        }
        if let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed {
            state.inputClosed()
            pump(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        shared.logger.debug("ingest connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// The one place work moves: take lines up to the bound, hand the batch to the WAL, write
    /// what is ready, read more if allowed, close after a half-close once all is answered.
    /// Re-entry (a write failing inline) is folded into the running pass.
    private func pump(context: ChannelHandlerContext) {
        if pumping {
            pumpAgain = true
            return
        }
        pumping = true
        defer { pumping = false }
        repeat {
            pumpAgain = false
            takeLines()
            if state.blocked == nil { submit() }
            flushReady(context: context)
            if state.mayRead(channelWritable: context.channel.isWritable) { context.read() }
            if state.shouldClose, context.channel.isActive {
                context.close(promise: nil)
            }
        } while pumpAgain
    }

    private func takeLines() {
        guard var buffer = input else {
            state.inputStalled = false
            return
        }
        input = nil  // uniquely referenced while lines are taken: no copy on write
        var stalled = false
        while true {
            guard state.mayTakeLine else {
                stalled = true
                break
            }
            guard let frame = splitter.next(&buffer) else { break }
            take(frame)
        }
        state.inputStalled = stalled && !state.closing
        if buffer.readableBytes > 0, !state.closing {
            if buffer.readerIndex > 64 << 10 { buffer.discardReadBytes() }
            input = buffer
        }
    }

    private func take(_ frame: IngestFrame) {
        if shared.state.isShuttingDown {
            appendReady(
                .rejected(IngestRejection(.shuttingDown, "sinkd is shutting down; send again after it restarts")))
            return
        }
        switch frame {
        case .tooLarge(let bytes):
            appendReady(
                .rejected(
                    IngestRejection(
                        .tooLarge,
                        "the request line is \(bytes) bytes; ingest.max_record_bytes allows \(Units.formatSize(shared.maxRecordBytes))"
                    )))
        case .line(let buffer):
            if buffer.readableBytes == 0 {
                return  // blank lines are not requests
            }
            let parsed = buffer.withUnsafeReadableBytes { RequestParser.parseLine($0) }
            let request: EventRecord
            switch parsed {
            case .failure(let rejection):
                appendReady(.rejected(rejection))
                return
            case .success(.query(.queueTypes)):
                // Answered in its place among the connection's answers; nothing is written.
                appendReady(.queueTypes(SinkPrefix.conductorQueueTypes(servedBy: shared.sinks)))
                return
            case .success(.record(let record)):
                request = record
            }
            switch resolve(request) {
            case .failure(let rejection):
                appendReady(.rejected(rejection))
            case .success(let record):
                // `{"id":…,"status":"duplicate","seq":<20 digits>}\n` is 50 bytes around the id.
                let number = state.expectAnswer(estimate: record.id.utf8.count + 64)
                batch.append(record)
                batchSlots.append(number)
            }
        }
    }

    // MARK: internals

    /// Validated sinks of this connection: a client sends the same few sinks over and over.
    /// `conductor` sinks are not cached (their expansion depends on the record).
    private var sinkCache: [String: Result<String, IngestRejection>] = [:]
    private var sinkCacheGeneration = 0

    private func resolve(_ request: EventRecord) -> Result<EventRecord, IngestRejection> {
        let generation = shared.sinksGeneration
        if generation != sinkCacheGeneration {
            sinkCache.removeAll()  // the configuration was reloaded
            sinkCacheGeneration = generation
        }
        guard !request.sink.hasPrefix("conductor") else {
            return request.resolvingSink(sinks: shared.sinks, configPath: shared.configPath)
        }
        let identity: Result<String, IngestRejection>
        if let cached = sinkCache[request.sink] {
            identity = cached
        } else {
            identity = request.resolvingSink(sinks: shared.sinks, configPath: shared.configPath).map(\.sink).mapError {
                IngestRejection($0.code, $0.message)
            }
            if sinkCache.count >= 256 { sinkCache.removeAll(keepingCapacity: true) }
            sinkCache[request.sink] = identity
        }
        switch identity {
        case .success(let sink):
            var record = request
            record.sink = sink
            return .success(record)
        case .failure(var rejection):
            rejection.id = request.id
            return .failure(rejection)
        }
    }

    private func appendReady(_ response: IngestResponse) {
        if case .rejected(let r) = response { IngestMetrics.rejected(r.code).increment() }
        state.answer(response)
    }

    private func submit() {
        guard !batch.isEmpty else { return }
        // Handed over, not copied: `removeAll(keepingCapacity:)` on a buffer just shared with the
        // WAL would allocate a fresh one at the largest burst's size, kept per connection.
        let records = batch
        let numbers = batchSlots
        batch = []
        batchSlots = IncreasingRun()
        append(records, numbers)
    }

    private func append(_ records: [EventRecord], _ numbers: IncreasingRun<UInt64>) {
        // The answers of accepted and duplicate records are filled when the WAL says they are
        // durable, on this loop (a task the callback queues: after this pass, whichever thread
        // calls it); the refusals below at once.
        // The loop's task calls the handler itself (not through `NIOLoopBound.execute`'s own
        // closure): one heap call fewer per batch.
        let loop = context!.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let outcomes = shared.wal.append(records, nowMillis: WallClock.millis()) { outcomes, result in
            loop.execute { bound.value.complete(records, numbers, outcomes, result) }
        }
        var accepted = 0
        var duplicates = 0
        for (i, outcome) in outcomes.enumerated() {
            switch outcome {
            case .accepted: accepted += 1
            case .duplicate: duplicates += 1
            case .full, .busy:
                if shared.whenFull == .block || outcome == .busy {
                    // Wait for room for this record (never at once while it does not fit, so
                    // this cannot spin), then append it and the rest again.
                    state.block(Array(records[i...]), Array(numbers[i...]))
                    let bound = NIOLoopBound(self, eventLoop: context!.eventLoop)
                    shared.wal.whenSpaceAvailable(bytes: WriteAheadLog.frameLength(of: records[i])) {
                        bound.execute { $0.retryBlocked() }
                    }
                } else {
                    IngestMetrics.rejected(.walFull).increment()
                    fill(
                        numbers[i],
                        .rejected(
                            IngestRejection(
                                .walFull, "the write-ahead log is full (wal.max_size); send again later",
                                id: records[i].id)))
                }
            case .shuttingDown:
                IngestMetrics.rejected(.shuttingDown).increment()
                fill(
                    numbers[i],
                    .rejected(
                        IngestRejection(
                            .shuttingDown, "sinkd is shutting down; send again after it restarts", id: records[i].id)))
            }
        }
        if accepted > 0 { IngestMetrics.accepted.increment(by: accepted) }
        if duplicates > 0 { IngestMetrics.duplicate.increment(by: duplicates) }
    }

    /// Fills the slots of a batch's accepted and duplicate records once the WAL round finished
    /// (the refusals were filled at append), then writes what is ready.
    private func complete(
        _ records: [EventRecord], _ numbers: IncreasingRun<UInt64>, _ outcomes: [AppendOutcome],
        _ result: Result<Void, WALWriteError>
    ) {
        for (i, outcome) in outcomes.enumerated() {
            let response: IngestResponse
            switch outcome {
            case .accepted(let seq): response = .accepted(id: records[i].id, seq: seq)
            case .duplicate(let seq): response = .duplicate(id: records[i].id, seq: seq)
            case .full, .busy, .shuttingDown: continue
            }
            switch result {
            case .success:
                fill(numbers[i], response)
            case .failure(let error):
                let id = records[i].id
                let rejection =
                    error.isNoSpace
                    ? IngestRejection(
                        .walFull, "the disk holding the write-ahead log is full; send again later", id: id)
                    : IngestRejection(
                        .internal, "the write-ahead log could not make the record durable (\(error)); send again",
                        id: id)
                IngestMetrics.rejected(rejection.code).increment()
                fill(numbers[i], .rejected(rejection))
            }
        }
        if let context { pump(context: context) }
    }

    private func retryBlocked() {
        guard let context, let (records, numbers) = state.unblock() else { return }
        append(records, IncreasingRun(numbers))
        pump(context: context)
    }

    private func fill(_ number: UInt64, _ response: IngestResponse) {
        state.fill(number, response)
    }

    /// Writes the ready responses at the head, in order, with one flush.
    private func flushReady(context: ChannelHandlerContext) {
        guard let out = state.takeWritable(allocator: context.channel.allocator) else { return }
        guard context.channel.isActive else {
            state.written(out.readableBytes)
            return
        }
        // Counted until the kernel has them: a client that never reads keeps them owed. Usually
        // the kernel takes them before writeAndFlush returns (nothing left buffered in the
        // channel): counted off at once, and the pump goes round again for the lines that bound
        // held back; no promise and no callback (three heap calls per write). Otherwise an empty
        // write's promise says when they left: the channel completes write promises in order.
        let written = out.readableBytes
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        if (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) == 0 {
            state.written(written)
            pumpAgain = true
            return
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        promise.futureResult.whenComplete { _ in
            let handler = bound.value
            handler.state.written(written)
            if let context = handler.context { handler.pump(context: context) }
        }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: promise)
    }

}

/// Counters of the ingest protocol (docs/METRICS.md).
enum IngestMetrics {
    static let accepted = Counter(label: "sinkd_ingest_records_total", dimensions: [("result", "accepted")])
    static let duplicate = Counter(label: "sinkd_ingest_records_total", dimensions: [("result", "duplicate")])
    private static let rejectedByCode: [RejectCode: Counter] = Dictionary(
        uniqueKeysWithValues: RejectCode.allCases.map {
            ($0, Counter(label: "sinkd_ingest_rejected_total", dimensions: [("code", $0.rawValue)]))
        })
    static func rejected(_ code: RejectCode) -> Counter { rejectedByCode[code]! }
}
