package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
)

// ErrRefused is wrapped by handshake errors for a peer whose id is not
// allowed (unknown, unlisted) or whose certificate is unusable.
var ErrRefused = errors.New("peer refused")

// Allow reports whether a peer id may connect. For a server it is the union
// of all per-volume sender allowlists (the volume itself is checked again
// once the peer names it); for a client it is the pinned receiver id.
type Allow func(peerID string) bool

// PeerIDFromCerts returns the node id of the leaf certificate in a TLS
// handshake's raw certificate chain, checking that it carries a P-256 key.
func PeerIDFromCerts(rawCerts [][]byte) (string, error) {
	if len(rawCerts) == 0 {
		return "", fmt.Errorf("%w: peer sent no certificate", ErrRefused)
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return "", fmt.Errorf("%w: unparsable certificate: %v", ErrRefused, err)
	}
	if err := checkKey(leaf.PublicKey); err != nil {
		return "", fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return IDOf(leaf.PublicKey)
}

// PeerID returns the node id of the peer of an established TLS connection.
func PeerID(cs tls.ConnectionState) (string, error) {
	raw := make([][]byte, 0, len(cs.PeerCertificates))
	for _, c := range cs.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	return PeerIDFromCerts(raw)
}

// verifier pins peers by id. The TLS 1.3 handshake has already checked that
// the peer holds the private key of the certificate it presented
// (CertificateVerify), so the key's fingerprint is the peer's identity and
// no chain needs to be built.
func verifier(side string, allow Allow, log *slog.Logger) func([][]byte, [][]*x509.Certificate) error {
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		id, err := PeerIDFromCerts(rawCerts)
		if err != nil {
			log.Warn("refused peer: bad certificate", "side", side, "err", err)
			return err
		}
		if allow == nil || !allow(id) {
			log.Warn("refused peer: id not allowed", "side", side, "peer", id)
			return fmt.Errorf("%w: node %s is not in the allowlist (add it with `dmsync peer add`)", ErrRefused, id)
		}
		return nil
	}
}

// ServerConfig returns a TLS 1.3-only server configuration that requires a
// client certificate and admits only clients whose id allow accepts.
// Refusals are logged with the peer's id.
func ServerConfig(self *Identity, allow Allow, log *slog.Logger) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{self.Cert},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: verifier("server", allow, log),
	}
}

// ClientConfig returns a TLS 1.3-only client configuration that presents
// self's certificate and admits only a server whose id allow accepts.
func ClientConfig(self *Identity, allow Allow, log *slog.Logger) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{self.Cert},
		// Chain verification is replaced by pinning in VerifyPeerCertificate,
		// which crypto/tls still calls.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifier("client", allow, log),
	}
}

// AllowIDs returns an Allow that accepts exactly the given ids.
func AllowIDs(ids ...string) Allow {
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return func(id string) bool { return set[id] }
}
