package attest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/codedigest"
	"github.com/rampart-mesh/rampart/internal/identity"
)

// Policies holds the WorkloadAttestationPolicy resources in force, compiled,
// and replaces them atomically. A nil *Policies, like an empty one, has no
// policies: no local process may claim any identity over the Unix socket,
// and any code may receive any identity. It is safe for concurrent use.
type Policies struct {
	td  spiffeid.TrustDomain
	cur atomic.Pointer[policySet]
}

// NewPolicies returns an empty set of policies for trust domain td.
func NewPolicies(td spiffeid.TrustDomain) *Policies {
	p := &Policies{td: td}
	p.cur.Store(&policySet{})
	return p
}

// policySet is one compiled generation of policies.
type policySet struct {
	policies []*policy
}

type policy struct {
	ref            string // namespace/name, for messages
	namespace      string // "" applies to every namespace (RootNamespace)
	serviceAccount string // "" applies to every service account
	code           *codePolicy
	proxyCode      *codePolicy
	unix           *unixPolicy
}

type codePolicy struct {
	digests map[string]bool
	signers []signer
}

type signer struct {
	name string
	key  any // ed25519.PublicKey or *ecdsa.PublicKey (P-256)
}

type unixPolicy struct {
	uids, gids map[uint32]bool // nil: any
}

// Set replaces the policies in force with ps, all or nothing: each is
// defaulted (on a copy) and validated, and if any is invalid the policies
// in force stay and the error lists every problem.
func (p *Policies) Set(ps []v1alpha1.WorkloadAttestationPolicy) error {
	if p == nil {
		return errors.New("attest: no policy holder")
	}
	next := &policySet{policies: make([]*policy, 0, len(ps))}
	var errs []error
	for i := range ps {
		pol := ps[i] // a shallow copy: Default sets only the namespace
		pol.Default()
		if err := pol.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("attest: WorkloadAttestationPolicy %s/%s: %w", pol.Namespace, pol.Name, err))
			continue
		}
		c, err := compile(&pol)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next.policies = append(next.policies, c)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	p.cur.Store(next)
	return nil
}

// TrustDomain is the trust domain of the identities the policies apply
// to; an identity of any other has none.
func (p *Policies) TrustDomain() spiffeid.TrustDomain {
	if p == nil {
		return spiffeid.TrustDomain{}
	}
	return p.td
}

// Len is the number of policies in force.
func (p *Policies) Len() int {
	if p == nil {
		return 0
	}
	return len(p.cur.Load().policies)
}

func compile(in *v1alpha1.WorkloadAttestationPolicy) (*policy, error) {
	out := &policy{ref: in.Namespace + "/" + in.Name, namespace: in.Namespace, serviceAccount: in.Spec.ServiceAccount}
	if out.namespace == v1alpha1.RootNamespace {
		out.namespace = ""
	}
	var err error
	if out.code, err = compileCode(out.ref, in.Spec.Code); err != nil {
		return nil, err
	}
	if out.proxyCode, err = compileCode(out.ref, in.Spec.ProxyCode); err != nil {
		return nil, err
	}
	if u := in.Spec.Unix; u != nil {
		out.unix = &unixPolicy{uids: idSet(u.UIDs), gids: idSet(u.GIDs)}
	}
	return out, nil
}

func compileCode(ref string, c *v1alpha1.CodePolicy) (*codePolicy, error) {
	if c == nil {
		return nil, nil
	}
	cp := &codePolicy{digests: make(map[string]bool, len(c.Digests))}
	for _, d := range c.Digests {
		cp.digests[d] = true
	}
	for _, s := range c.Signers {
		key, err := v1alpha1.ParseSignerKey(s.PublicKey)
		if err != nil {
			// Validate parsed it already.
			return nil, fmt.Errorf("attest: WorkloadAttestationPolicy %s: signer %s: %w", ref, s.Name, err)
		}
		cp.signers = append(cp.signers, signer{name: s.Name, key: key})
	}
	return cp, nil
}

func idSet(ids []int64) map[uint32]bool {
	if len(ids) == 0 {
		return nil
	}
	m := make(map[uint32]bool, len(ids))
	for _, id := range ids {
		m[uint32(id)] = true // Validate bounded them to 0..2^32-2
	}
	return m
}

// applicable returns the policies that apply to id, in the order given to
// Set. An id of another trust domain, or not a workload ID, has none.
func (p *Policies) applicable(id spiffeid.ID) []*policy {
	if p == nil || id.TrustDomain() != p.td {
		return nil
	}
	ns, sa, err := identity.ParseWorkloadID(id)
	if err != nil {
		return nil
	}
	var out []*policy
	for _, pol := range p.cur.Load().policies {
		if (pol.namespace == "" || pol.namespace == ns) && (pol.serviceAccount == "" || pol.serviceAccount == sa) {
			out = append(out, pol)
		}
	}
	return out
}

// Code is what is known of a workload's code when its identity is issued.
type Code struct {
	// Digest is "sha256:<hex>", or empty when nothing was measured.
	Digest string
	// Signature loads the detached signature over Digest, for policies
	// that admit code by signer. Nil when there is no signature to be had
	// here (code known only from a certificate): then only a policy's
	// digests can admit the code.
	Signature func() ([]byte, error)
	// Source says where Digest comes from, for messages: "the executable
	// of process 1234", "the presented certificate".
	Source string
}

// CheckCode reports whether every policy that applies to id admits code:
// an *Error with ReasonCodeNotAttested when a policy requires code and
// none is known, ReasonCodeNotAllowed when the digest is neither listed
// nor signed by a listed key. With no policy on code for id, any code, or
// none, is admitted.
func (p *Policies) CheckCode(id spiffeid.ID, code Code) error {
	return p.checkCode(id, code, sectionCode)
}

// CheckProxyCode is CheckCode for the proxy that asks for id on the
// workload's behalf, the process connected to the Unix attestation socket:
// every policy that applies to id and has a proxyCode section must admit
// it. With no such policy any proxy, measured or not, is admitted.
func (p *Policies) CheckProxyCode(id spiffeid.ID, code Code) error {
	return p.checkCode(id, code, sectionProxyCode)
}

// RequiresProxyCode reports whether a policy that applies to id has a
// proxyCode section.
func (p *Policies) RequiresProxyCode(id spiffeid.ID) bool {
	for _, pol := range p.applicable(id) {
		if pol.proxyCode != nil {
			return true
		}
	}
	return false
}

// The code sections of a policy.
const (
	sectionCode      = "code"
	sectionProxyCode = "proxyCode"
)

func (p *Policies) checkCode(id spiffeid.ID, code Code, section string) error {
	var (
		sig     []byte
		sigErr  error
		sigRead bool
	)
	for _, pol := range p.applicable(id) {
		cp := pol.code
		if section == sectionProxyCode {
			cp = pol.proxyCode
		}
		if cp == nil {
			continue
		}
		if code.Digest == "" {
			if section == sectionProxyCode {
				return refuse(ReasonCodeNotAttested,
					"WorkloadAttestationPolicy "+pol.ref+" admits only an attested proxy build (proxyCode) for "+id.String()+
						", and this request measured none: obtain and renew the identity over the controller's Unix attestation socket", nil)
			}
			return refuse(ReasonCodeNotAttested,
				"WorkloadAttestationPolicy "+pol.ref+" admits only attested code for "+id.String()+
					", and this request measured none: obtain the identity over the controller's Unix attestation socket (without a join token)", nil)
		}
		if cp.digests[code.Digest] {
			continue
		}
		if len(cp.signers) == 0 {
			return codeRefusal(pol, section, id, code, "it is not among the policy's digests", nil)
		}
		if code.Signature == nil {
			return codeRefusal(pol, section, id, code, "it is not among the policy's digests, and its signature cannot be checked on this path (renew over the Unix attestation socket)", nil)
		}
		if !sigRead {
			sig, sigErr = code.Signature()
			sigRead = true
		}
		if sigErr != nil {
			return codeRefusal(pol, section, id, code, "it is not among the policy's digests, and it has no readable signature", sigErr)
		}
		if !cp.verify(code.Digest, sig) {
			return codeRefusal(pol, section, id, code, "it is not among the policy's digests, and its signature does not verify with any of the policy's signers ("+cp.signerNames()+")", nil)
		}
	}
	return nil
}

func codeRefusal(pol *policy, section string, id spiffeid.ID, code Code, why string, err error) *Error {
	src := ""
	if code.Source != "" {
		src = " (" + code.Source + ")"
	}
	what, may := "code ", " may not receive "
	if section == sectionProxyCode {
		what, may = "proxy code ", " may not ask for "
	}
	return &Error{
		Reason: ReasonCodeNotAllowed,
		Digest: code.Digest,
		Msg: what + code.Digest + src + may + id.String() + ": " + why +
			"; the " + section + " section of WorkloadAttestationPolicy " + pol.ref + " decides which code may (docs/attestation.md)",
		Err: err,
	}
}

func (cp *codePolicy) signerNames() string {
	names := make([]string, len(cp.signers))
	for i, s := range cp.signers {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

// verify reports whether one of the signers signed digest: sig is over
// the 32 bytes of the SHA-256 sum, ASN.1 DER for ECDSA P-256 (as
// `openssl dgst -sha256 -sign` writes) or 64 bytes for Ed25519.
func (cp *codePolicy) verify(digest string, sig []byte) bool {
	sum, err := codedigest.Bytes(digest)
	if err != nil {
		return false
	}
	for _, s := range cp.signers {
		switch k := s.key.(type) {
		case ed25519.PublicKey:
			if len(sig) == ed25519.SignatureSize && ed25519.Verify(k, sum[:], sig) {
				return true
			}
		case *ecdsa.PublicKey:
			if ecdsa.VerifyASN1(k, sum[:], sig) {
				return true
			}
		}
	}
	return false
}

// MaxSignatureFileSize bounds a detached signature file.
const MaxSignatureFileSize = 4 << 10

// DecodeSignature decodes the content of a detached signature file: base64
// (standard alphabet, padded; surrounding white space ignored) when it is
// that, the raw signature bytes otherwise.
func DecodeSignature(data []byte) ([]byte, error) {
	if len(data) == 0 {
		return nil, errors.New("signature file is empty")
	}
	if len(data) > MaxSignatureFileSize {
		return nil, fmt.Errorf("signature file is %d bytes, more than the %d allowed", len(data), MaxSignatureFileSize)
	}
	if dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data))); err == nil && len(dec) > 0 {
		return dec, nil
	}
	return slices.Clone(data), nil
}

// admitUnix reports whether a process running as uid and gid may claim
// id over the Unix socket: at least one policy that applies to id must
// have a unix section, and every such section must admit uid and gid.
func (p *Policies) admitUnix(id spiffeid.ID, uid, gid uint32) error {
	found := false
	for _, pol := range p.applicable(id) {
		u := pol.unix
		if u == nil {
			continue
		}
		found = true
		if u.uids != nil && !u.uids[uid] {
			return refuse(ReasonUserNotAllowed, fmt.Sprintf("uid %d may not claim %s: WorkloadAttestationPolicy %s lists other users", uid, id, pol.ref), nil)
		}
		if u.gids != nil && !u.gids[gid] {
			return refuse(ReasonUserNotAllowed, fmt.Sprintf("gid %d may not claim %s: WorkloadAttestationPolicy %s lists other groups", gid, id, pol.ref), nil)
		}
	}
	if !found {
		return refuse(ReasonNoPolicy, "no WorkloadAttestationPolicy lets a process on the Unix attestation socket claim "+id.String()+
			"; add one with a unix section (docs/attestation.md) or start with a join token", nil)
	}
	return nil
}
