package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

func TestInitLoad(t *testing.T) {
	dir := t.TempDir()
	a, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.ID) != IDLen {
		t.Fatalf("id %q has %d chars, want %d", a.ID, len(a.ID), IDLen)
	}
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID {
		t.Fatalf("reloaded id %s != %s", b.ID, a.ID)
	}
	if _, err := Init(dir); !errors.Is(err, ErrExists) {
		t.Fatalf("second Init: %v, want ErrExists", err)
	}
	if _, err := Load(t.TempDir()); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("Load empty dir: %v, want ErrNoIdentity", err)
	}
	c, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == a.ID {
		t.Fatal("two Inits produced the same id")
	}
}

func TestParseID(t *testing.T) {
	id := mustInit(t).ID
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{id, id, true},
		{" " + strings.ToUpper(id) + "\n", id, true},
		{id[:IDLen-1], "", false},
		{id + "a", "", false},
		{"", "", false},
		{strings.Repeat("1", IDLen), "", false},
	} {
		got, err := ParseID(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("ParseID(%q) = %q, %v", tc.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrBadID) {
			t.Errorf("ParseID(%q) error %v is not ErrBadID", tc.in, err)
		}
	}
}

func mustInit(t *testing.T) *Identity {
	t.Helper()
	id, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// handshake runs a TLS handshake over loopback and returns both sides'
// errors and what the server read after the handshake.
func handshake(t *testing.T, server, client *tls.Config) (serr, cerr error, got []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		err error
		got []byte
	}
	done := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- res{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			done <- res{err: err}
			return
		}
		b, err := io.ReadAll(tc)
		done <- res{err: err, got: b}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	cerr = tc.Handshake()
	if cerr == nil {
		_, cerr = tc.Write([]byte("payload"))
		tc.Close()
	} else {
		c.Close()
	}
	r := <-done
	return r.err, cerr, r.got
}

func testLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, nil))
}

func TestHandshake(t *testing.T) {
	srv, cli, stranger := mustInit(t), mustInit(t), mustInit(t)

	// A client holding cli's certificate but another private key: it cannot
	// produce cli's CertificateVerify signature.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	stolen := &Identity{ID: cli.ID, Cert: tls.Certificate{Certificate: cli.Cert.Certificate, PrivateKey: otherKey}}

	// A P-384 certificate: wrong key type, refused even if "listed".
	p384 := selfSigned(t, elliptic.P384())

	for _, tc := range []struct {
		name       string
		serverAlw  Allow
		clientSelf *Identity
		clientAlw  Allow
		ok         bool
		logged     string // substring expected in the server's log
	}{
		{"listed", AllowIDs(cli.ID), cli, AllowIDs(srv.ID), true, ""},
		{"unlisted client", AllowIDs(cli.ID), stranger, AllowIDs(srv.ID), false, stranger.ID},
		{"empty allowlist", AllowIDs(), cli, AllowIDs(srv.ID), false, cli.ID},
		{"stolen certificate", AllowIDs(cli.ID), stolen, AllowIDs(srv.ID), false, ""},
		{"p384 key", AllowIDs(cli.ID), p384, AllowIDs(srv.ID), false, "ECDSA P-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var slog bytes.Buffer
			scfg := ServerConfig(srv, tc.serverAlw, testLogger(&slog))
			ccfg := ClientConfig(tc.clientSelf, tc.clientAlw, testLogger(new(bytes.Buffer)))
			serr, cerr, got := handshake(t, scfg, ccfg)
			if tc.ok {
				if serr != nil || cerr != nil || string(got) != "payload" {
					t.Fatalf("server %v, client %v, got %q", serr, cerr, got)
				}
				return
			}
			if serr == nil {
				t.Fatalf("server accepted the peer (client err %v)", cerr)
			}
			if len(got) != 0 {
				t.Fatalf("server read %q from a refused peer", got)
			}
			if !strings.Contains(slog.String(), tc.logged) || (tc.logged != "" && !strings.Contains(slog.String(), "refused peer")) {
				t.Fatalf("server log %q lacks %q", slog.String(), tc.logged)
			}
		})
	}
}

func TestClientRefusesUnpinnedServer(t *testing.T) {
	srv, cli, other := mustInit(t), mustInit(t), mustInit(t)
	var clog bytes.Buffer
	serr, cerr, got := handshake(t,
		ServerConfig(srv, AllowIDs(cli.ID), testLogger(new(bytes.Buffer))),
		ClientConfig(cli, AllowIDs(other.ID), testLogger(&clog)))
	if cerr == nil || !errors.Is(cerr, ErrRefused) && !strings.Contains(cerr.Error(), "not in the allowlist") {
		t.Fatalf("client accepted an unpinned server: %v", cerr)
	}
	if serr == nil || len(got) != 0 {
		t.Fatalf("server: %v, read %q", serr, got)
	}
	if !strings.Contains(clog.String(), srv.ID) {
		t.Fatalf("client log %q lacks the server's id", clog.String())
	}
}

func TestPlainTCPRefused(t *testing.T) {
	srv, cli := mustInit(t), mustInit(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, ServerConfig(srv, AllowIDs(cli.ID), testLogger(new(bytes.Buffer))))
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		done <- nil
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	if err := <-done; err == nil {
		t.Fatal("server completed a handshake with a plain TCP client")
	}
	c.Close()
}

func selfSigned(t *testing.T, curve elliptic.Curve) *Identity {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := IDOf(&key.PublicKey)
	return &Identity{ID: id, Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

func TestTLS12Refused(t *testing.T) {
	srv, cli := mustInit(t), mustInit(t)
	ccfg := ClientConfig(cli, AllowIDs(srv.ID), testLogger(new(bytes.Buffer)))
	ccfg.MinVersion, ccfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	serr, cerr, _ := handshake(t, ServerConfig(srv, AllowIDs(cli.ID), testLogger(new(bytes.Buffer))), ccfg)
	if serr == nil || cerr == nil {
		t.Fatalf("TLS 1.2 handshake not refused: server %v, client %v", serr, cerr)
	}
}
