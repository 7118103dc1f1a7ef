package meshtls_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func newCA(t *testing.T) *ca.CA {
	t.Helper()
	c, err := ca.Open(ca.Config{Dir: t.TempDir(), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func svid(t *testing.T, c *ca.CA, path string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	id := spiffeid.RequireFromPath(td, path)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.SignCSR(csr, id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

func TestVerifyPeerAndReason(t *testing.T) {
	mine, other := newCA(t), newCA(t)
	var bundle meshtls.Bundle
	bundle.SetRoots(td, mine.Roots())
	now := time.Now()

	good := svid(t, mine, "/ns/a/sa/b", time.Hour)
	foreign := svid(t, other, "/ns/a/sa/b", time.Hour)
	shortLived := svid(t, mine, "/ns/a/sa/b", time.Minute)

	tests := []struct {
		name   string
		certs  []*x509.Certificate
		at     time.Time
		bundle *meshtls.Bundle
		reason string // "" means accepted
	}{
		{"valid", good.Certificates, now, &bundle, ""},
		{"none", nil, now, &bundle, meshtls.ReasonNoCertificate},
		{"other CA", foreign.Certificates, now, &bundle, meshtls.ReasonUnknownAuthority},
		{"expired", shortLived.Certificates, now.Add(2 * time.Minute), &bundle, meshtls.ReasonExpired},
		{"not yet valid", good.Certificates, now.Add(-time.Hour), &bundle, meshtls.ReasonNotYetValid},
		{"no bundle for the domain", good.Certificates, now, new(meshtls.Bundle), meshtls.ReasonUntrustedDomain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := meshtls.VerifyPeer(tt.certs, tt.bundle, tt.at)
			if tt.reason == "" {
				if err != nil || id != good.ID {
					t.Fatalf("VerifyPeer = %v, %v; want %v", id, err, good.ID)
				}
				return
			}
			if err == nil {
				t.Fatalf("VerifyPeer accepted; want refusal %s", tt.reason)
			}
			if got := meshtls.Reason(err); got != tt.reason {
				t.Fatalf("Reason(%v) = %s, want %s", err, got, tt.reason)
			}
		})
	}
	if got := meshtls.Reason(&meshtls.WrongIdentityError{}); got != meshtls.ReasonWrongIdentity {
		t.Fatalf("wrong identity reason %s", got)
	}
	if got := meshtls.Reason(errors.New("boom")); got != meshtls.ReasonHandshake {
		t.Fatalf("other error reason %s", got)
	}
}

// handshake runs one TLS handshake over a pipe, returning both sides' errors.
func handshake(server, client *tls.Config) (serverErr, clientErr error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		err := s.Handshake()
		if err == nil {
			// Let the client finish reading.
			_, err = s.Write([]byte{1})
		}
		done <- err
	}()
	c := tls.Client(b, client)
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = c.Read(make([]byte, 1))
	}
	a.Close()
	return <-done, clientErr
}

func TestServerAndClientConfigs(t *testing.T) {
	authority := newCA(t)
	var bundle meshtls.Bundle
	bundle.SetRoots(td, authority.Roots())
	serverSVID, clientSVID := new(meshtls.SVID), new(meshtls.SVID)
	if err := serverSVID.Set(svid(t, authority, "/ns/shop/sa/orders", time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := clientSVID.Set(svid(t, authority, "/ns/shop/sa/web", time.Hour)); err != nil {
		t.Fatal(err)
	}
	srv := meshtls.Config{SVID: serverSVID, Bundle: &bundle}
	cli := meshtls.Config{SVID: clientSVID, Bundle: &bundle}
	orders := spiffeid.RequireFromPath(td, "/ns/shop/sa/orders")
	payments := spiffeid.RequireFromPath(td, "/ns/shop/sa/payments")

	if serr, cerr := handshake(srv.Server(nil), cli.Client(orders)); serr != nil || cerr != nil {
		t.Fatalf("mutual handshake: server %v, client %v", serr, cerr)
	}

	_, cerr := handshake(srv.Server(nil), cli.Client(payments))
	var wrong *meshtls.WrongIdentityError
	if !errors.As(cerr, &wrong) || wrong.Got != orders || wrong.Want != payments {
		t.Fatalf("client expecting payments: %v, want WrongIdentityError", cerr)
	}

	// A client with no SVID yet presents none, and the server refuses it.
	anon := meshtls.Config{SVID: new(meshtls.SVID), Bundle: &bundle}
	serr, _ := handshake(srv.Server(nil), anon.Client(orders))
	if meshtls.Reason(serr) != meshtls.ReasonNoCertificate {
		t.Fatalf("anonymous client: server error %v, want no_certificate", serr)
	}

	// The authorize hook refuses a verified peer.
	deny := errors.New("not you")
	serr, _ = handshake(srv.Server(func(spiffeid.ID) error { return deny }), cli.Client(orders))
	if !errors.Is(serr, deny) {
		t.Fatalf("authorize hook: %v", serr)
	}

	// Rotation: a new SVID is used by the next handshake.
	next := svid(t, authority, "/ns/shop/sa/orders", time.Hour)
	if err := serverSVID.Set(next); err != nil {
		t.Fatal(err)
	}
	cert, err := serverSVID.Certificate()
	if err != nil || cert.Leaf.SerialNumber.Cmp(next.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("rotated certificate not in use: %v", err)
	}
}
