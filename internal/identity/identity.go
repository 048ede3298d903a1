// Package identity holds a dmsync node's identity: an ECDSA P-256 key and a
// self-signed certificate kept in the node's state directory. A node's id is
// the SHA-256 fingerprint of its public key (SubjectPublicKeyInfo, DER),
// written in lower-case base32 without padding. Peers are pinned by id: no CA
// is involved, and the certificate only carries the key.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside the state directory.
const (
	KeyFile  = "node.key" // PKCS#8 private key, PEM, mode 0600
	CertFile = "node.crt" // self-signed X.509 certificate, PEM
)

// IDLen is the length of a node id in characters (32 bytes in base32).
const IDLen = 52

var (
	// ErrExists is returned by Init when the state directory already holds
	// an identity.
	ErrExists = errors.New("identity already exists")
	// ErrNoIdentity is returned by Load when the state directory holds none.
	ErrNoIdentity = errors.New("no node identity")
	// ErrBadID is returned for a string that is not a node id.
	ErrBadID = errors.New("not a node id")
)

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Identity is a node's key pair and certificate.
type Identity struct {
	// ID is the node id: the fingerprint of Cert's public key.
	ID string
	// Cert is the certificate and private key presented in TLS handshakes.
	Cert tls.Certificate
}

// IDOf returns the node id of a public key.
func IDOf(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return strings.ToLower(idEncoding.EncodeToString(sum[:])), nil
}

// ParseID checks that s is a node id and returns it in canonical form
// (lower case, surrounding space removed).
func ParseID(s string) (string, error) {
	id := strings.ToLower(strings.TrimSpace(s))
	raw, err := idEncoding.DecodeString(strings.ToUpper(id))
	if err != nil || len(raw) != sha256.Size {
		return "", fmt.Errorf("%w: %q (want %d base32 characters as printed by `dmsync id`)", ErrBadID, s, IDLen)
	}
	return id, nil
}

// Init creates a new identity in dir (created with mode 0700 if missing).
// It refuses to replace an existing one: a node's id must not change under
// its peers' pins.
func Init(dir string) (*Identity, error) {
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err == nil {
		return nil, fmt.Errorf("init %s: %w (remove %s to make a new one; peers will need the new id)", dir, ErrExists, KeyFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("init: create state dir: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("init: generate key: %w", err)
	}
	id, err := IDOf(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("init: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "dmsync " + id},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(100, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("init: self-sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("init: marshal key: %w", err)
	}
	// Certificate first: Load keys off the key file, so a crash between the
	// two writes leaves a directory Init can retry.
	if err := writeFileSync(dir, CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o644); err != nil {
		return nil, err
	}
	if err := writeFileSync(dir, KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	return Load(dir)
}

// Load reads the identity from dir.
func Load(dir string) (*Identity, error) {
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load identity from %s: %w (run `dmsync init` first)", dir, ErrNoIdentity)
	}
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load identity from %s: key and certificate do not match: %w", dir, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("load identity: parse certificate: %w", err)
	}
	if err := checkKey(leaf.PublicKey); err != nil {
		return nil, fmt.Errorf("load identity from %s: %w", dir, err)
	}
	cert.Leaf = leaf
	id, err := IDOf(leaf.PublicKey)
	if err != nil {
		return nil, err
	}
	return &Identity{ID: id, Cert: cert}, nil
}

func checkKey(pub crypto.PublicKey) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return fmt.Errorf("key is %T, want ECDSA P-256", pub)
	}
	return nil
}

func writeFileSync(dir, name string, data []byte, mode os.FileMode) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("rename %s: %w", name, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
