import Foundation
import Testing
import SinkdTestSupport
import SinkdCore
import SinkdDelivery
@testable import SinkdSQSSink
import SinkdTestServers

@Suite(.blockingThreads) struct SigV4Tests {
    static let example = SigV4Signer.Credentials(
        accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    static let date = Date(timeIntervalSince1970: 1_440_938_160)  // 2015-08-30T12:36:00Z

    static func authorization(_ signed: [(String, String)]) -> String? { signed.first { $0.0 == "Authorization" }?.1 }

    /// AWS's published SigV4 test suite (get-vanilla, post-vanilla, get-vanilla-query-order-key-case).
    @Test(arguments: [
        ("GET", "", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ("POST", "", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        ("GET", "Param2=value2&Param1=value1", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ])
    func awsTestSuite(method: String, query: String, signature: String) {
        let signer = SigV4Signer(credentials: Self.example, region: "us-east-1", service: "service")
        let signed = signer.sign(
            method: method, path: "/", query: query, headers: [("Host", "example.amazonaws.com")], body: [],
            date: Self.date)
        #expect(
            Self.authorization(signed)
                == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=\(signature)"
        )
        #expect(signed.first { $0.0 == "X-Amz-Date" }?.1 == "20150830T123600Z")
    }

    /// The same SQS requests signed by botocore (the reference implementation, from PyPI) and by
    /// sinkd: with and without a session token, with a JSON body.
    @Test(arguments: [nil, "FwoGZXIvYXdzEXAMPLETOKEN//+="])
    func matchesBotocore(token: String?) throws {
        let credentials = SigV4Signer.Credentials(
            accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            sessionToken: token)
        let signer = SigV4Signer(credentials: credentials, region: "eu-west-1", service: "sqs")
        let body = SQSProtocol.sendMessageBatch(
            queueURL: "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            records: [EventRecord(id: "r-1", sink: "sqs:orders", payload: Array(#"{"a": "é  b"}"#.utf8))],
            options: .init(fifo: false, groupIDTemplate: "", messageAttributes: true, sink: "sqs:orders"))
        let headers = [
            ("Host", "sqs.eu-west-1.amazonaws.com"), ("Content-Type", SQSProtocol.contentType),
            ("X-Amz-Target", "AmazonSQS.SendMessageBatch"),
        ]
        let date = Date(timeIntervalSince1970: 1_795_000_000)
        let ours = try #require(
            Self.authorization(signer.sign(method: "POST", path: "/", headers: headers, body: body, date: date)))
        let bodyFile = FileManager.default.temporaryDirectory.appendingPathComponent("sigv4-body-\(UUID().uuidString)")
            .path
        try Data(body).write(to: URL(fileURLWithPath: bodyFile))
        defer { try? FileManager.default.removeItem(atPath: bodyFile) }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Fixtures/sigv4_botocore.py"
        ).path
        let output = try Python.run([
            script, "POST", "https://sqs.eu-west-1.amazonaws.com/", bodyFile, SigV4Signer.amzDate(date), "eu-west-1",
            "sqs",
            credentials.accessKeyID, credentials.secretAccessKey, token ?? "-",
            "Content-Type=\(SQSProtocol.contentType)", "X-Amz-Target=AmazonSQS.SendMessageBatch",
        ])
        #expect(output.trimmingCharacters(in: .whitespacesAndNewlines) == ours)
    }

    @Test func canonicalQueryEncodesAndSorts() {
        #expect(SigV4Signer.canonicalQuery("b=2&a=x%20y&a=1") == "a=1&a=x%20y&b=2")
        #expect(SigV4Signer.uriEncode("a b/é~") == "a%20b%2F%C3%A9~")
    }
}

@Suite(.blockingThreads) struct SQSProtocolTests {
    @Test func batchBodyCarriesBodiesAttributesAndFIFOFields() throws {
        var record = EventRecord(id: "t-1", sink: "sqs:orders.fifo", payload: Array(#"{"n":1}"#.utf8))
        record.workflowInstanceId = "wf-9"
        record.correlationId = "c-3"
        let body = SQSProtocol.sendMessageBatch(
            queueURL: "http://q/1/orders.fifo",
            records: [record, EventRecord(id: "t-2", sink: "sqs:orders.fifo", payload: Array("2".utf8))],
            options: .init(
                fifo: true, groupIDTemplate: "{{workflowInstanceId}}", messageAttributes: true, sink: "sqs:orders.fifo")
        )
        let object = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        #expect(object["QueueUrl"] as? String == "http://q/1/orders.fifo")
        let entries = try #require(object["Entries"] as? [[String: Any]])
        #expect(entries.map { $0["Id"] as? String } == ["0", "1"])
        #expect(entries[0]["MessageBody"] as? String == #"{"n":1}"#)
        #expect(entries[0]["MessageGroupId"] as? String == "wf-9")
        #expect(entries[1]["MessageGroupId"] as? String == "sqs:orders.fifo", "no workflowInstanceId: the sink name")
        #expect(entries[0]["MessageDeduplicationId"] as? String == "t-1")
        let attributes = try #require(entries[0]["MessageAttributes"] as? [String: [String: String]])
        #expect(attributes["sinkd-message-id"] == ["DataType": "String", "StringValue": "t-1"])
        #expect(attributes["workflowInstanceId"]?["StringValue"] == "wf-9")
        #expect(attributes["correlationId"]?["StringValue"] == "c-3")
        #expect(attributes["workflowType"] == nil)
        let plain = SQSProtocol.sendMessageBatch(
            queueURL: "u", records: [record],
            options: .init(fifo: false, groupIDTemplate: "", messageAttributes: false, sink: "s"))
        let plainEntry = try #require(
            (try JSONSerialization.jsonObject(with: Data(plain)) as? [String: Any])?["Entries"] as? [[String: Any]]
        ).first
        #expect(plainEntry?["MessageAttributes"] == nil && plainEntry?["MessageGroupId"] == nil)
    }

    @Test func queueLookupAndCreation() throws {
        let lookup = try #require(
            try JSONSerialization.jsonObject(
                with: Data(SQSProtocol.getQueueUrl(name: "orders", ownerAccountID: "123456789012")))
                as? [String: String])
        #expect(lookup == ["QueueName": "orders", "QueueOwnerAWSAccountId": "123456789012"])
        let own = try #require(
            try JSONSerialization.jsonObject(with: Data(SQSProtocol.getQueueUrl(name: "orders", ownerAccountID: "")))
                as? [String: String])
        #expect(own == ["QueueName": "orders"], "no account id: the caller's own queue, by its exact name")
        let fifo = try #require(
            try JSONSerialization.jsonObject(with: Data(SQSProtocol.createQueue(name: "a.fifo"))) as? [String: Any])
        #expect(fifo["Attributes"] as? [String: String] == ["FifoQueue": "true", "ContentBasedDeduplication": "false"])
        #expect(
            (try JSONSerialization.jsonObject(with: Data(SQSProtocol.createQueue(name: "a"))) as? [String: Any])?[
                "Attributes"] == nil)
    }

    @Test func groupAndDeduplicationIDs() {
        var r = EventRecord(id: "id 1", sink: "s", payload: [])
        r.workflowType = "wt"
        #expect(SQSProtocol.groupID("{{workflowType}}-{{taskRefName}}", record: r, sink: "s") == "wt-")
        #expect(SQSProtocol.groupID("{{correlationId}}", record: r, sink: "sqs:x.fifo") == "sqs:x.fifo")
        #expect(SQSProtocol.deduplicationID("ok-1") == "ok-1")
        #expect(SQSProtocol.deduplicationID("id 1") == "69642031", "a space is not allowed: hex")
    }

    @Test func perEntryResultsAndErrorKinds() throws {
        let result = try #require(
            SQSProtocol.parseBatchResult(
                Array(
                    #"{"Successful":[{"Id":"0","MessageId":"m"}],"Failed":[{"Id":"1","SenderFault":true,"Code":"InvalidMessageContents","Message":"bad char"},{"Id":"2","SenderFault":false,"Code":"InternalError","Message":"later"}]}"#
                        .utf8)))
        #expect(result.successful == [0])
        #expect(result.failed[1] == .init(senderFault: true, code: "InvalidMessageContents", message: "bad char"))
        #expect(result.failed[2]?.senderFault == false)
        let missing = SQSProtocol.parseError(
            status: 400,
            body: Array(
                #"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#
                    .utf8), queryErrorHeader: "AWS.SimpleQueueService.NonExistentQueue;Sender")
        #expect(missing.kind == .queueDoesNotExist)
        #expect(
            SQSProtocol.parseError(
                status: 403,
                body: Array(#"{"__type":"com.amazon.coral.service#InvalidClientTokenId","message":"no"}"#.utf8),
                queryErrorHeader: nil
            ).kind == .credentials)
        #expect(
            SQSProtocol.parseError(
                status: 400, body: Array(#"{"__type":"com.amazon.coral.service#SignatureDoesNotMatch"}"#.utf8),
                queryErrorHeader: nil
            ).kind == .credentials)
        #expect(
            SQSProtocol.parseError(
                status: 400, body: Array(#"{"__type":"com.amazonaws.sqs#ThrottlingException"}"#.utf8),
                queryErrorHeader: nil
            ).kind == .retryable)
        #expect(SQSProtocol.parseError(status: 429, body: [], queryErrorHeader: nil).kind == .retryable)
        #expect(
            SQSProtocol.parseError(status: 503, body: Array("<html>".utf8), queryErrorHeader: nil).kind == .retryable)
        let xml = SQSProtocol.parseError(
            status: 403,
            body: Array(
                "<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error></Errors></ErrorResponse>"
                    .utf8), queryErrorHeader: nil)
        #expect(
            xml
                == .init(
                    status: 403, code: "InvalidClientTokenId",
                    message: "The security token included in the request is invalid."))
        #expect(xml.kind == .credentials)
        #expect(SQSProtocol.parseError(status: 403, body: [], queryErrorHeader: nil).kind == .credentials)
        let tooLong = SQSProtocol.parseError(
            status: 400, body: Array(#"{"__type":"com.amazonaws.sqs#BatchRequestTooLong","message":"too long"}"#.utf8),
            queryErrorHeader: nil)
        #expect(tooLong.kind == .permanent)
        #expect(tooLong.description == "HTTP 400 BatchRequestTooLong: too long")
    }
}
