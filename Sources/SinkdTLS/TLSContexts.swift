import NIOCore
import NIOSSL
import SinkdCore
import SinkdDelivery

/// Builds client TLS contexts from a `tls` section (CA file, client certificate and key,
/// verification on by default).
public enum TLSContexts {
    public static func client(_ tls: TLSConfig, section: String) throws(SinkConnectionError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        do {
            if !tls.caFile.isEmpty {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(tls.caFile))
            }
        } catch {
            throw SinkConnectionError(
                "\(section).ca_file \(tls.caFile): not a readable PEM certificate file (\(error))")
        }
        if !tls.certificateFile.isEmpty || !tls.keyFile.isEmpty {
            guard !tls.certificateFile.isEmpty, !tls.keyFile.isEmpty else {
                throw SinkConnectionError(
                    "\(section): certificate_file and key_file go together (a client certificate needs its key)")
            }
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(tls.certificateFile).map {
                    .certificate($0)
                }
            } catch {
                throw SinkConnectionError(
                    "\(section).certificate_file \(tls.certificateFile): not a readable PEM certificate file (\(error))"
                )
            }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: tls.keyFile, format: .pem))
            } catch {
                throw SinkConnectionError(
                    "\(section).key_file \(tls.keyFile): not a readable PEM private key (\(error))")
            }
        }
        configuration.certificateVerification = tls.verify ? .fullVerification : .none
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw SinkConnectionError("\(section): cannot build the TLS context (\(error))")
        }
    }
}

extension String {
    /// An IPv4 or IPv6 literal: TLS sends no SNI for it, and verifies the certificate's IP address.
    public var isIPAddress: Bool {
        (try? SocketAddress(ipAddress: self, port: 0)) != nil
    }
}
