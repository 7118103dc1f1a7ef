package controlplane

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// TestTelemetryStreamEndsOnRevocation: a report stream opened before its
// certificate is revoked ends at the next report.
func TestTelemetryStreamEndsOnRevocation(t *testing.T) {
	te, revoked := newRevocableTelemetryEnv(t)
	e, c := te.env, te.clock

	id := workloadID("shop", "web")
	svid := e.svidFor(t, id)
	cc := e.dial(t, svid)
	te.register(t, cc, "web-1")
	stream := reportStream(t, cc)
	if err := stream.Send(report(c.Now(), "web-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return te.reports(t, ReportAccepted, "") == 1 })

	revoked.Store(meshtls.NewRevocationSet([]string{meshtls.SerialOf(svid.Certificates[0])}, nil))
	c.Add(ReportRate)
	// The stream may already be ended by the server when Send runs.
	_ = stream.Send(report(c.Now(), "web-1"))
	_, err := stream.CloseAndRecv()
	wantCode(t, err, codes.PermissionDenied)
	if got := te.refusals(t, meshtls.ReasonRevoked); got != 1 {
		t.Errorf("telemetry_streams_refused_total{revoked} = %v, want 1", got)
	}
	if got := te.reports(t, ReportAccepted, ""); got != 1 {
		t.Errorf("accepted reports = %v, want 1: the report after the revocation was recorded", got)
	}
}
