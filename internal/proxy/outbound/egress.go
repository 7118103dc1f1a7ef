package outbound

// Egress: transparent connections to destinations outside the mesh. In
// mode ALLOW_ANY they pass through, the app's bytes forwarded as they
// come; in MESH_ONLY they are refused; in ALLOW_LISTED they pass only when
// a rule of the configuration's egress allow-list admits them:
//
//   - a CIDR rule, by the original destination address and port, at once;
//   - a host rule, by the name the app sends first (TLS server name, HTTP/1
//     Host, HTTP/2 :authority), read within DetectTimeout, and only when
//     the original destination address is one that the name resolves to
//     by the proxy's own lookup (egress.Pinner), so that a forged name
//     cannot reach another address, and is not loopback, link-local,
//     unspecified, broadcast or multicast (egress.Reserved).
//
// Anything else is refused: counted, logged (sampled), and closed; a
// plain HTTP/1 request is answered 403 with a decision ID first. The bytes
// read while looking for the name are sent on first when the connection
// passes. Every connection is counted in rampart_proxy_egress_*_total by
// destination: the rule's pattern or network, or a name or address the
// app supplied, whose values egress.Labels caps.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/egress"
	"github.com/rampart-mesh/rampart/internal/proxy/logsample"
	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

// Egress actions, the action label of rampart_proxy_egress_*_total.
const (
	EgressAllowed = "allowed"
	EgressRefused = "refused"
)

// egressShared is what egress handling keeps across configurations.
type egressShared struct {
	pinner *egress.Pinner
	// labels caps the destination labels that apps supply (names they
	// send, addresses they dial); those of rules, bounded by the
	// configuration, are used as they are.
	labels egress.Labels
	// log samples the log of refused and failed egress connections, which
	// an app can cause as fast as it connects.
	log logsample.Bucket
	// dial connects to a destination outside the mesh.
	dial func(ctx context.Context, network, address string) (net.Conn, error)
}

func newEgressShared(cfg Config) *egressShared {
	d := &net.Dialer{Timeout: cfg.DialTimeout}
	return &egressShared{pinner: egress.NewPinner(egress.PinnerConfig{Resolver: cfg.EgressResolver}), dial: d.DialContext}
}

// compileEgress compiles the configuration's egress allow-list. The proxy
// validated it (egress.Compile) before applying the configuration; one
// that does not compile here admits nothing (fail closed).
func compileEgress(pc *meshv1.ProxyConfig) *egress.Policy {
	p, err := egress.Compile(pc.GetEgress())
	if err != nil {
		return nil
	}
	return p
}

// serveEgress carries or refuses a connection to a destination outside
// the mesh, under the egress mode and allow-list of st.
func (o *Outbound) serveEgress(c *conns, conn net.Conn, dst netip.AddrPort, st *state) {
	defer conn.Close()
	if st.egress != meshv1.EgressMode_EGRESS_ALLOW_LISTED {
		// ALLOW_ANY: the app's bytes go on as they come; the destination
		// label is the name they send, read from a bounded copy.
		o.carryEgress(c, conn, dst, "", nil)
		return
	}
	if label, ok := st.allowed.MatchAddr(dst); ok {
		o.carryEgress(c, conn, dst, label, nil)
		return
	}
	if !st.allowed.HostsOn(dst.Port()) {
		o.refuseEgress(conn, dst, egress.Hello{}, nil, "no egress rule admits the address and port")
		return
	}
	h, peeked, err := egress.Peek(conn, o.cfg.DetectTimeout)
	if err != nil {
		o.refuseEgress(conn, dst, egress.Hello{}, nil, "the app closed the connection before naming a host")
		return
	}
	if h.Name == "" {
		o.refuseEgress(conn, dst, h, peeked, "no egress rule admits the address, and the app named no host (TLS server name, HTTP host) in its first bytes")
		return
	}
	pattern, ok := st.allowed.MatchHost(h.Name, dst.Port())
	if !ok {
		o.refuseEgress(conn, dst, h, peeked, "no egress rule admits the host and port")
		return
	}
	// Resolves refuses loopback, link-local, multicast and unspecified
	// addresses whatever the name resolves to: only a network rule,
	// matched above, admits those.
	if err := o.egress.pinner.Resolves(c.ctx, h.Name, dst.Addr()); err != nil {
		o.refuseEgress(conn, dst, h, peeked, "the destination address is not one the host may reach: "+err.Error())
		return
	}
	o.carryEgress(c, conn, dst, pattern, peeked)
}

// carryEgress dials the destination and copies both ways, peeked first.
// label is the destination label of the rule that admitted the
// connection; "" means the name the app sends, read from the bytes as
// they pass, or else the address, capped by egressShared.labels.
func (o *Outbound) carryEgress(c *conns, conn net.Conn, dst netip.AddrPort, label string, peeked []byte) {
	up, err := o.egress.dial(c.ctx, "tcp", dst.String())
	if err != nil {
		if label == "" {
			label = o.egress.labels.Of(dst.Addr().String())
		}
		o.cfg.Metrics.Egress.WithLabelValues(label, EgressRefused).Inc()
		o.cfg.Metrics.EgressBytes.WithLabelValues(label, EgressRefused, "sent").Add(float64(len(peeked)))
		o.logEgress("destination outside the mesh unreachable", "destination", dst.String(), "err", err)
		return
	}
	defer up.Close()
	// The drain deadline cuts what is still open.
	stop := context.AfterFunc(c.ctx, func() { conn.Close(); up.Close() })
	defer stop()

	var (
		received int64
		wg       sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		received, _ = io.Copy(conn, up)
		closeWrite(conn)
	}()
	var sent int64
	if label != "" {
		o.cfg.Metrics.Egress.WithLabelValues(label, EgressAllowed).Inc()
		if len(peeked) > 0 {
			n, err := up.Write(peeked)
			sent += int64(n)
			if err != nil {
				up.Close()
			}
		}
	} else {
		// Counted under the name once the bytes name one, under the
		// address once they cannot or DetectTimeout passes.
		var once sync.Once
		count := func(name string) {
			once.Do(func() {
				if name == "" {
					name = dst.Addr().String()
				}
				label = o.egress.labels.Of(name)
				o.cfg.Metrics.Egress.WithLabelValues(label, EgressAllowed).Inc()
			})
		}
		timer := time.AfterFunc(o.cfg.DetectTimeout, func() { count("") })
		n, err := copyNaming(up, conn, count)
		sent += n
		timer.Stop()
		count("")
		if err != nil {
			up.Close()
		}
	}
	n, _ := io.Copy(up, conn)
	sent += n
	closeWrite(up)
	wg.Wait()
	o.cfg.Metrics.EgressBytes.WithLabelValues(label, EgressAllowed, "sent").Add(float64(sent))
	o.cfg.Metrics.EgressBytes.WithLabelValues(label, EgressAllowed, "received").Add(float64(received))
}

// copyNaming copies from src to dst as the bytes come, keeping a copy of
// the first sniff.MaxHello+5 of them to read the destination name from,
// until the name is known or cannot be; then it calls named, with "" for
// no name, and returns. The caller copies the rest. An error is a write
// error, or a read error other than the end of src (named is then called
// with "" too).
func copyNaming(dst io.Writer, src io.Reader, named func(string)) (int64, error) {
	const keep = sniff.MaxHello + 5
	var (
		seen = make([]byte, 0, 2048)
		buf  = make([]byte, 32<<10)
		sent int64
	)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			seen = append(seen, buf[:min(n, keep-len(seen))]...)
			w, werr := dst.Write(buf[:n])
			sent += int64(w)
			if werr != nil {
				named("")
				return sent, werr
			}
			if h, done := egress.NameOf(seen); done || len(seen) >= keep {
				named(h.Name)
				return sent, nil
			}
		}
		if rerr != nil {
			named("")
			if rerr == io.EOF {
				return sent, nil
			}
			return sent, rerr
		}
	}
}

// refuseEgress counts and logs a refused egress connection, answering a
// plain HTTP/1 request 403 with a decision ID first. The caller closes
// conn.
func (o *Outbound) refuseEgress(conn net.Conn, dst netip.AddrPort, h egress.Hello, peeked []byte, why string) {
	label := h.Name
	if label == "" {
		label = dst.Addr().String()
	}
	lbl := o.egress.labels.Of(label) // from the app: capped
	o.refuse(ReasonEgressDenied)
	o.cfg.Metrics.Egress.WithLabelValues(lbl, EgressRefused).Inc()
	o.cfg.Metrics.EgressBytes.WithLabelValues(lbl, EgressRefused, "sent").Add(float64(len(peeked)))
	id := newEgressDecisionID()
	if h.Protocol == sniff.HTTP1 {
		conn.SetWriteDeadline(time.Now().Add(time.Second)) //nolint:errcheck // best effort: the connection is closed next
		io.WriteString(conn, "HTTP/1.1 403 Forbidden\r\n"+ //nolint:errcheck // as above
			"Content-Type: text/plain; charset=utf-8\r\n"+
			tunnel.HeaderDecisionID+": "+id+"\r\n"+
			"Connection: close\r\n\r\n"+
			"rampart: egress to this destination is not allowed (decision "+id+")\n")
		// Let the client read the answer: closing with its request
		// unread would reset the connection first.
		closeWrite(conn)
		conn.SetReadDeadline(time.Now().Add(time.Second)) //nolint:errcheck // as above
		io.Copy(io.Discard, io.LimitReader(conn, 64<<10)) //nolint:errcheck // as above
	}
	attrs := []any{"destination", dst.String(), "reason", why, "decision", id}
	if h.Name != "" {
		attrs = append(attrs, "host", h.Name)
	}
	o.logEgress("refused connection outside the mesh", attrs...)
}

// logEgress logs an egress event, sampled.
func (o *Outbound) logEgress(msg string, attrs ...any) {
	ok, suppressed := o.egress.log.Allow(time.Now())
	if !ok {
		return
	}
	o.log.Info(msg, append(attrs, "suppressed_since_last", suppressed)...)
}

// newEgressDecisionID returns 12 random hex digits, as the inbound side's
// decision IDs: enough to find one decision in the logs of a fleet.
func newEgressDecisionID() string {
	var b [6]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}
