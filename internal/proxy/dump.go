package proxy

import (
	"crypto/x509"
	"encoding/json"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// certSummary describes a certificate without its key.
type certSummary struct {
	Subject   string    `json:"subject"`
	URIs      []string  `json:"uris,omitempty"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

func summarize(c *x509.Certificate) certSummary {
	s := certSummary{Subject: c.Subject.String(), Serial: c.SerialNumber.Text(16), NotBefore: c.NotBefore, NotAfter: c.NotAfter}
	for _, u := range c.URIs {
		s.URIs = append(s.URIs, u.String())
	}
	return s
}

// dump is what /config shows: identity, certificates (never keys) and the
// configuration in force.
func (p *Proxy) dump() any {
	out := struct {
		SpiffeID    string          `json:"spiffeId"`
		Ready       bool            `json:"ready"`
		Draining    bool            `json:"draining"`
		SVID        []certSummary   `json:"svid,omitempty"`
		TrustBundle []certSummary   `json:"trustBundle"`
		Config      json.RawMessage `json:"config,omitempty"`
	}{SpiffeID: p.id.String(), Ready: p.Ready(), Draining: p.draining.Load()}
	if s := p.svid.Get(); s != nil {
		for _, c := range s.Certificates {
			out.SVID = append(out.SVID, summarize(c))
		}
	}
	for _, r := range p.bundle.Roots(p.id.TrustDomain()) {
		out.TrustBundle = append(out.TrustBundle, summarize(r))
	}
	if pc := p.config.Load(); pc != nil {
		// The bundle is shown above, decoded; leave the DER out.
		c := proto.CloneOf(pc)
		c.TrustBundle = nil
		if b, err := protojson.Marshal(c); err == nil {
			out.Config = b
		}
	}
	return out
}
