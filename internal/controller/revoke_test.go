package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/controlplane"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/revocation"
)

// certifyOn asks for a certificate for id over cc (renewal when cc presents
// an SVID), with a join token when token is not empty.
func certifyOn(t *testing.T, cc *grpc.ClientConn, id spiffeid.ID, token string) error {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = meshv1.NewIdentityClient(cc).Certify(ctx, &meshv1.CertifyRequest{Csr: csr, JoinToken: token})
	return err
}

// attestWithToken certifies id with a fresh join token over a connection without a
// certificate.
func attestWithToken(t *testing.T, c *Controller, id spiffeid.ID) error {
	t.Helper()
	bundle := &meshtls.Bundle{}
	bundle.SetRoots(c.TrustDomain(), readBundle(t, c.BundlePath()))
	tlsCfg := meshtls.Config{SVID: &meshtls.SVID{}, Bundle: bundle}.Client(ControllerID(c.TrustDomain()))
	cc, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	token, err := c.Tokens().Create(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certifyOn(t, cc, id, token)
}

func gaugeValue(t *testing.T, c *Controller, name, kind string) float64 {
	t.Helper()
	mfs, err := c.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "kind" && lp.GetValue() == kind {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{kind=%q}", name, kind)
	return 0
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRevocation(t *testing.T) {
	var skew atomic.Int64 // how far the controller's clock runs ahead
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	// A long poll interval: the file is picked up by notification.
	c := start(t, Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "off", TrustDomain: "example.org",
		Now: now, CAPollInterval: time.Minute})
	td := c.TrustDomain()
	web := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "web")
	api := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "api")
	p := newProxy(t, c, web)
	if err := certifyOn(t, p.cc, web, ""); err != nil {
		t.Fatalf("renewal before the revocation: %v", err)
	}
	// Revoke the certificate that p's connection presents.
	presented := presentedSerial(t, p)
	path := c.RevocationsPath()
	if _, err := revocation.Update(path, now(), 0, func(l *revocation.List) error {
		return l.RevokeCertificate(revocation.Certificate{Serial: presented, RevokedAt: now(), Reason: "key leaked"})
	}); err != nil {
		t.Fatal(err)
	}
	pushed := func(serial string) bool {
		for _, rc := range c.Model().ConfigFor(api, "api-1", nil).GetRevocations().GetCertificates() {
			if rc.GetSerial() == serial {
				return true
			}
		}
		return false
	}
	poll(t, "the revocation to reach the model", func() bool { return pushed(presented) })
	// The certificate renewed from it before the revocation goes with it:
	// pushed, and written to the file so that it outlives the one revoked.
	var renewed string
	for _, l := range c.IdentityStatus().Workloads {
		if l.DescendsFrom(presented) {
			renewed = l.Serial
		}
	}
	if renewed == "" {
		t.Fatalf("no certificate in use records that it was renewed from %s: %+v", presented, c.IdentityStatus().Workloads)
	}
	poll(t, "the renewed certificate to be revoked too", func() bool { return pushed(renewed) })
	poll(t, "the renewed certificate to be written to the file", func() bool {
		l, err := revocation.Load(path)
		return err == nil && slices.ContainsFunc(l.Certificates, func(c revocation.Certificate) bool {
			return c.Serial == renewed && strings.Contains(c.Reason, presented)
		})
	})
	if got := gaugeValue(t, c, "rampart_controller_revocations", RevokedCertificates); got != 2 {
		t.Errorf("revocations{kind=certificate} = %v, want 2", got)
	}
	before := refusedCount(t, c, controlplane.CertifyRevoked)
	err := certifyOn(t, p.cc, web, "")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("renewal with a revoked certificate = %v, want PermissionDenied", err)
	}
	if got := refusedCount(t, c, controlplane.CertifyRevoked); got != before+1 {
		t.Errorf("certify_total{refused,revoked} = %v, want %v", got, before+1)
	}
	// Attesting again yields a new certificate.
	if err := attestWithToken(t, c, web); err != nil {
		t.Fatalf("attesting again after a serial revocation: %v", err)
	}

	// Revoke an identity: no certificate for it until released.
	if _, err := revocation.Update(path, now(), 0, func(l *revocation.List) error {
		return l.RevokeIdentity(revocation.Identity{SPIFFEID: api.String(), RevokedAt: now().Truncate(time.Second)})
	}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the identity revocation to be in force", func() bool {
		return gaugeValue(t, c, "rampart_controller_revocations", RevokedIdentities) == 1
	})
	if err := attestWithToken(t, c, api); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "--release") {
		t.Fatalf("attesting a revoked identity = %v, want PermissionDenied naming --release", err)
	}
	if _, err := revocation.Update(path, now(), 0, func(l *revocation.List) error {
		return l.Release(api.String(), now())
	}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the release to be in force", func() bool {
		return gaugeValue(t, c, "rampart_controller_revocations", ReleasedIdentities) == 1
	})
	// Released, but a certificate issued now would predate the revocation.
	if err := attestWithToken(t, c, api); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "may be issued again from") {
		t.Fatalf("attesting within a minute of the revocation = %v", err)
	}
	skew.Store(int64(ca.ClockSkew + 2*time.Second))
	if err := attestWithToken(t, c, api); err != nil {
		t.Fatalf("attesting after the release: %v", err)
	}

	// A corrupt file is counted and the list in force stays.
	errorsBefore := counterValue(t, c, "rampart_controller_revocation_reloads_total", "error")
	if err := os.WriteFile(path+".new", []byte(`{"version":1,"certificates":[{"serial":"XYZ"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	poll(t, "the corrupt file to be counted", func() bool {
		return counterValue(t, c, "rampart_controller_revocation_reloads_total", "error") > errorsBefore
	})
	if !pushed(presented) {
		t.Fatal("a corrupt file dropped the list in force")
	}

	// An entry that revokes the controller itself is dropped, logged and
	// counted; the other entries of the file apply.
	other := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "cart")
	droppedBefore := droppedValue(t, c, DroppedControllerIdentity)
	at := now().UTC().Format(time.RFC3339)
	if err := os.WriteFile(path+".new", []byte(`{"version":1,"certificates":[{"serial":"`+presented+`","revoked_at":"`+at+`"}],"identities":[`+
		`{"spiffe_id":"`+ControllerID(td).String()+`","revoked_at":"`+at+`"},`+
		`{"spiffe_id":"`+other.String()+`","revoked_at":"`+at+`"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	revokedIDs := func() []string {
		var ids []string
		for _, e := range c.Model().ConfigFor(api, "api-1", nil).GetRevocations().GetIdentities() {
			ids = append(ids, e.GetSpiffeId())
		}
		return ids
	}
	poll(t, "the other entries of the file to apply", func() bool { return slices.Contains(revokedIDs(), other.String()) })
	if ids := revokedIDs(); slices.Contains(ids, ControllerID(td).String()) {
		t.Errorf("the controller's own identity was pushed as revoked: %v", ids)
	}
	if got := droppedValue(t, c, DroppedControllerIdentity); got != droppedBefore+1 {
		t.Errorf("revocation_entries_dropped_total{controller_identity} = %v, want %v", got, droppedBefore+1)
	}
	if !pushed(presented) {
		t.Error("the certificate entry of the file was not applied")
	}
}

func droppedValue(t *testing.T, c *Controller, reason string) float64 {
	t.Helper()
	mfs, err := c.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rampart_controller_revocation_entries_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no revocation_entries_dropped_total{reason=%q}", reason)
	return 0
}

// presentedSerial is the serial of the certificate p's connection presents.
func presentedSerial(t *testing.T, p *proxy) string {
	t.Helper()
	cert, err := p.tlsCfg.GetClientCertificate(nil)
	if err != nil || cert.Leaf == nil {
		t.Fatalf("the test proxy has no certificate: %v", err)
	}
	return meshtls.SerialOf(cert.Leaf)
}

func TestCorruptRevocationsRefuseToStart(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/" + RevocationsFile
	if err := os.WriteFile(path, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{StateDir: dir, Listen: "127.0.0.1:0", AdminListen: "off"})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("New with a corrupt revocations file = %v, want an error naming it", err)
	}
}

// TestRevocationsFilePruned: the controller removes lapsed entries from
// the file, under its lock, so that the list does not fill up with them.
func TestRevocationsFilePruned(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/" + RevocationsFile
	now := time.Now().UTC().Truncate(time.Second)
	past, future := now.Add(-time.Hour).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339)
	long := now.Add(-48 * time.Hour).Format(time.RFC3339)
	if err := os.WriteFile(path, []byte(`{"version":1,"certificates":[`+
		`{"serial":"a1","not_after":"`+past+`","revoked_at":"`+long+`"},`+
		`{"serial":"a2","not_after":"`+future+`","revoked_at":"`+past+`"}],"identities":[`+
		`{"spiffe_id":"spiffe://example.org/ns/shop/sa/old","revoked_at":"`+long+`","released_at":"`+long+`"},`+
		`{"spiffe_id":"spiffe://example.org/ns/shop/sa/new","revoked_at":"`+past+`","released_at":"`+past+`"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := start(t, Config{StateDir: dir, Listen: "127.0.0.1:0", AdminListen: "off", TrustDomain: "example.org", CAPollInterval: time.Minute})
	poll(t, "the lapsed entries to leave the file", func() bool {
		l, err := revocation.Load(path)
		return err == nil && len(l.Certificates) == 1 && len(l.Identities) == 1
	})
	l, err := revocation.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if l.Certificates[0].Serial != "a2" || l.Identities[0].SPIFFEID != "spiffe://example.org/ns/shop/sa/new" {
		t.Errorf("the file keeps %+v, want a2 and the identity released an hour ago", l)
	}
	if got := counterValue(t, c, "rampart_controller_revocation_writes_total", "ok"); got < 1 {
		t.Errorf("revocation_writes_total{ok} = %v, want at least 1", got)
	}
}

// TestRevocationReadBeforeIssue: an issuance reads a changed file first,
// without waiting for a notification or the poll; and an entry lasts one
// certificate lifetime plus the CA's backdating and the poll interval.
func TestRevocationReadBeforeIssue(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	// Not run: no notification, no poll; only the issuance path reads.
	c, err := New(Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "off", TrustDomain: "example.org",
		Now: now, CAPollInterval: time.Hour, SVIDTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	web := spiffeid.RequireFromSegments(c.TrustDomain(), "ns", "shop", "sa", "web")
	if err := c.checkRevoked(web, nil); err != nil {
		t.Fatalf("issuing before the revocation: %v", err)
	}
	revokedAt := now().UTC().Truncate(time.Second)
	if _, err := revocation.Update(c.RevocationsPath(), revokedAt, 0, func(l *revocation.List) error {
		if err := l.RevokeCertificate(revocation.Certificate{Serial: "abc", RevokedAt: revokedAt}); err != nil {
			return err
		}
		return l.RevokeIdentity(revocation.Identity{SPIFFEID: web.String(), RevokedAt: revokedAt})
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.checkRevoked(web, nil); err == nil || !strings.Contains(err.Error(), "--release") {
		t.Fatalf("issuing right after the revocation was written = %v, want a refusal", err)
	}
	// A serial of unknown expiry outlives one lifetime by the margin.
	skew.Store(int64(time.Hour + ca.ClockSkew))
	if err := c.reloadRevocations(); err != nil {
		t.Fatal(err)
	}
	if !c.revoked.set.RevokesSerial("abc") {
		t.Error("the serial lapsed one lifetime plus the CA's backdating after its revocation, within the poll interval")
	}
	skew.Store(int64(2*time.Hour + ca.ClockSkew + time.Second))
	if err := c.reloadRevocations(); err != nil {
		t.Fatal(err)
	}
	if c.revoked.set.RevokesSerial("abc") {
		t.Error("the serial did not lapse one lifetime, the CA's backdating and the poll interval after its revocation")
	}
}
