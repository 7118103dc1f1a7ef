package meshtls_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/meshtls"
)

func TestQuarantineSetEndsOnItsOwn(t *testing.T) {
	until := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	web := spiffeid.RequireFromPath(td, "/ns/shop/sa/web")
	api := spiffeid.RequireFromPath(td, "/ns/shop/sa/api")
	set := meshtls.NewQuarantineSet(map[spiffeid.ID]time.Time{web: until})
	leaf := func(id spiffeid.ID) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(9), URIs: []*url.URL{id.URL()}}
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		at   time.Time
		want bool
	}{
		{"listed, before until", leaf(web), until.Add(-time.Second), true},
		{"listed, at until", leaf(web), until, false},
		{"listed, after until", leaf(web), until.Add(time.Hour), false},
		{"not listed", leaf(api), until.Add(-time.Hour), false},
		{"no SPIFFE ID", &x509.Certificate{SerialNumber: big.NewInt(9)}, until.Add(-time.Hour), false},
		{"nil", nil, until.Add(-time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := set.Check(tc.cert, tc.at)
			var qe *meshtls.QuarantinedError
			if got := errors.As(err, &qe); got != tc.want {
				t.Fatalf("Check = %v, quarantined %v; want %v", err, got, tc.want)
			}
			if tc.want && (qe.ID != web || !qe.Until.Equal(until) || meshtls.Reason(err) != meshtls.ReasonQuarantined) {
				t.Fatalf("Check = %#v (reason %s)", qe, meshtls.Reason(err))
			}
		})
	}
	var nilSet *meshtls.QuarantineSet
	if nilSet.Check(leaf(web), until.Add(-time.Hour)) != nil || nilSet.Len() != 0 {
		t.Fatal("a nil set quarantines")
	}
	var q *meshtls.Quarantine
	if q.Check(leaf(web), until.Add(-time.Hour)) != nil {
		t.Fatal("a nil Quarantine quarantines")
	}
}

// TestQuarantineRefusesHandshakesBothWays: with a quarantine in force at
// the time of the handshake, a server refuses a quarantined client and a
// client a quarantined server, each with a *PeerError carrying the leaf;
// once until passes on the clock, with no new list, the handshake works.
func TestQuarantineRefusesHandshakesBothWays(t *testing.T) {
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
	start := time.Now()
	now := start
	clock := func() time.Time { return now }
	q := new(meshtls.Quarantine)
	srv := meshtls.Config{SVID: serverSVID, Bundle: &bundle, Quarantine: q, Now: clock}
	cli := meshtls.Config{SVID: clientSVID, Bundle: &bundle, Quarantine: q, Now: clock}
	orders, web := serverSVID.Get().ID, clientSVID.Get().ID

	q.Set(meshtls.NewQuarantineSet(map[spiffeid.ID]time.Time{web: start.Add(time.Minute)}))
	serr, _ := handshake(srv.Server(nil), cli.Client(orders))
	var pe *meshtls.PeerError
	if !errors.As(serr, &pe) || meshtls.Reason(serr) != meshtls.ReasonQuarantined {
		t.Fatalf("server error %v, want a quarantined PeerError", serr)
	}
	if pe.Leaf == nil || pe.Leaf.SerialNumber.Cmp(clientSVID.Get().Certificates[0].SerialNumber) != 0 {
		t.Fatalf("PeerError leaf %v, want the client's certificate", pe.Leaf)
	}

	q.Set(meshtls.NewQuarantineSet(map[spiffeid.ID]time.Time{orders: start.Add(time.Minute)}))
	_, cerr := handshake(srv.Server(nil), cli.Client(orders))
	if !errors.As(cerr, &pe) || meshtls.Reason(cerr) != meshtls.ReasonQuarantined {
		t.Fatalf("client error %v, want a quarantined PeerError", cerr)
	}

	now = start.Add(time.Minute) // the quarantine has ended
	if serr, cerr := handshake(srv.Server(nil), cli.Client(orders)); serr != nil || cerr != nil {
		t.Fatalf("handshake after until: server %v, client %v", serr, cerr)
	}
}

// TestPeerErrorOnlyForCertificateRefusals: a refusal of the peer's
// certificate is a *PeerError (with a nil leaf when there was none); the
// peer's own refusal is not.
func TestPeerErrorOnlyForCertificateRefusals(t *testing.T) {
	authority, other := newCA(t), newCA(t)
	var bundle meshtls.Bundle
	bundle.SetRoots(td, authority.Roots())
	serverSVID, rogueSVID := new(meshtls.SVID), new(meshtls.SVID)
	if err := serverSVID.Set(svid(t, authority, "/ns/shop/sa/orders", time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := rogueSVID.Set(svid(t, other, "/ns/shop/sa/web", time.Hour)); err != nil {
		t.Fatal(err)
	}
	srv := meshtls.Config{SVID: serverSVID, Bundle: &bundle}
	rogue := meshtls.Config{SVID: rogueSVID, Bundle: &bundle}
	orders := serverSVID.Get().ID

	serr, cerr := handshake(srv.Server(nil), rogue.Client(orders))
	var pe *meshtls.PeerError
	if !errors.As(serr, &pe) || meshtls.Reason(serr) != meshtls.ReasonUnknownAuthority || pe.Leaf == nil {
		t.Fatalf("server error %v, want an unknown_authority PeerError with the leaf", serr)
	}
	if errors.As(cerr, &pe) {
		t.Fatalf("the refused client's error %v is a PeerError: the client refused nothing", cerr)
	}

	anon := meshtls.Config{SVID: new(meshtls.SVID), Bundle: &bundle}
	serr, _ = handshake(srv.Server(nil), anon.Client(orders))
	if !errors.As(serr, &pe) || pe.Leaf != nil || !errors.Is(serr, meshtls.ErrNoCertificate) {
		t.Fatalf("anonymous client: server error %v, want a PeerError without a leaf", serr)
	}
}

func TestPresentedBy(t *testing.T) {
	id := spiffeid.RequireFromPath(td, "/ns/shop/sa/web")
	longCN := strings.Repeat("é", 200) // 400 bytes
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want meshtls.Presented
	}{
		{"nil", nil, meshtls.Presented{}},
		{"SVID", &x509.Certificate{SerialNumber: big.NewInt(0xabc), URIs: []*url.URL{id.URL()},
			Issuer: pkix.Name{CommonName: "issuer", Organization: []string{"rampart"}}},
			meshtls.Presented{ID: id.String(), Serial: "abc", Issuer: "CN=issuer,O=rampart"}},
		{"two URIs", &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{id.URL(), id.URL()}},
			meshtls.Presented{Serial: "1"}},
		{"serial past 20 octets", &x509.Certificate{SerialNumber: new(big.Int).Lsh(big.NewInt(1), 160), URIs: []*url.URL{id.URL()}},
			meshtls.Presented{ID: id.String()}},
		{"not a SPIFFE ID", &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{{Scheme: "https", Host: "example.org"}}},
			meshtls.Presented{Serial: "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := meshtls.PresentedBy(tc.cert); got != tc.want {
				t.Fatalf("PresentedBy = %+v, want %+v", got, tc.want)
			}
		})
	}
	got := meshtls.PresentedBy(&x509.Certificate{SerialNumber: big.NewInt(1), Issuer: pkix.Name{CommonName: longCN}})
	if len(got.Issuer) > meshtls.MaxIssuerBytes || !utf8.ValidString(got.Issuer) || !strings.HasPrefix(got.Issuer, "CN=é") {
		t.Fatalf("long issuer cut to %d bytes (valid %v): %q", len(got.Issuer), utf8.ValidString(got.Issuer), got.Issuer)
	}
	if len(got.Issuer) < meshtls.MaxIssuerBytes-1 {
		t.Fatalf("long issuer cut to %d bytes, want the most of %d that ends a character", len(got.Issuer), meshtls.MaxIssuerBytes)
	}
}
