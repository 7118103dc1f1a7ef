package v1alpha1

// This file holds WorkloadAttestationPolicy: which code may receive a
// workload identity, and which local processes may claim it over the
// controller's Unix attestation socket. docs/attestation.md describes it;
// internal/attest enforces it.

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/internal/codedigest"
	"github.com/rampart-mesh/rampart/internal/identity"
)

// KindWorkloadAttestationPolicy is the kind of WorkloadAttestationPolicy.
const KindWorkloadAttestationPolicy = "WorkloadAttestationPolicy"

// WorkloadAttestationPolicy says which code may receive the identities it
// applies to, and which local processes may claim them over the
// controller's Unix attestation socket. It applies to the identity
// spiffe://<trust-domain>/ns/<its namespace>/sa/<spec.serviceAccount>, to
// every service account of its namespace when spec.serviceAccount is
// empty, and, in RootNamespace, to the identities of every namespace.
//
// When several policies apply to an identity, each must admit the
// workload: a namespace's policy cannot be weakened by a more specific one.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart,shortName=attestpolicy
// +kubebuilder:printcolumn:name="Service Account",type="string",JSONPath=".spec.serviceAccount"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type WorkloadAttestationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec WorkloadAttestationPolicySpec `json:"spec"`
}

// WorkloadAttestationPolicySpec describes a WorkloadAttestationPolicy. It
// sets code, proxyCode, unix, or several of them.
type WorkloadAttestationPolicySpec struct {
	// ServiceAccount names the identity the policy applies to within its
	// namespace. Empty: every service account.
	// +kubebuilder:validation:MaxLength=63
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Code, when set, is the code that may receive the identity, however it
	// is attested: a workload whose attested code digest it does not
	// admit, or whose attestation measures no code (a join token over
	// TCP), gets no certificate. The workload's code is the app that
	// rampart-proxy runs as its child (rampart-proxy -- <command>), or,
	// when the proxy runs no app, the process connected to the socket.
	Code *CodePolicy `json:"code,omitempty"`
	// ProxyCode, when set, is the code that may ask for the identity on
	// the workload's behalf: the executable of the process connected to
	// the controller's Unix attestation socket (rampart-proxy). Without
	// it, which proxy build runs the app is not checked. It has the shape
	// of Code and is checked the same way; an attestation that measures
	// no connecting process (over TCP) is refused.
	ProxyCode *CodePolicy `json:"proxyCode,omitempty"`
	// Unix, when set, lets a process on the controller's Unix attestation
	// socket claim the identity without a join token, if it runs as one of
	// these users and groups (and its executable is admitted by Code). Not
	// in RootNamespace.
	Unix *UnixAttestation `json:"unix,omitempty"`
}

// CodePolicy admits code by digest or by signature: a workload's code is
// admitted when its digest is one of Digests, or when one of Signers signed
// it. At least one of the two is set.
type CodePolicy struct {
	// Digests are SHA-256 digests of admitted executables,
	// "sha256:<64 lower-case hex digits>" (what `sha256sum` prints, with the
	// prefix).
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:Pattern=`^sha256:[0-9a-f]{64}$`
	Digests []string `json:"digests,omitempty"`
	// Signers are public keys; code is admitted when a detached signature
	// by one of them over its digest verifies (in local mode, the file
	// <executable>.sig; see docs/attestation.md).
	// +kubebuilder:validation:MaxItems=1024
	Signers []CodeSigner `json:"signers,omitempty"`
}

// CodeSigner is a key that signs builds.
type CodeSigner struct {
	// Name identifies the key in logs. Required, unique in the policy.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// PublicKey is one PEM "PUBLIC KEY" block (PKIX): Ed25519 or ECDSA
	// P-256.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	PublicKey string `json:"publicKey"`
}

// UnixAttestation says which local processes may claim an identity over
// the Unix attestation socket. The kernel vouches for the user and group
// (the effective IDs of the process when it connected).
type UnixAttestation struct {
	// UIDs the process may run as; empty means any.
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:Minimum=0
	// +kubebuilder:validation:items:Maximum=4294967294
	UIDs []int64 `json:"uids,omitempty"`
	// GIDs the process may run as (its effective group); empty means any.
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:Minimum=0
	// +kubebuilder:validation:items:Maximum=4294967294
	GIDs []int64 `json:"gids,omitempty"`
}

// Bounds of a WorkloadAttestationPolicy.
const (
	maxAttestationListLen = 1024
	maxPublicKeyLen       = 8 << 10
	maxUnixID             = math.MaxUint32 - 1 // (uid_t)-1 means "no user"
)

// Default fills the namespace.
func (p *WorkloadAttestationPolicy) Default() {
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
}

// Validate reports every invalid field of p as FieldErrors. A policy must
// say something (code, unix or both), and a unix section must not let every
// local process claim the identity: it needs users, groups or code to
// check.
func (p *WorkloadAttestationPolicy) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, p.TypeMeta, KindWorkloadAttestationPolicy)
	validateObjectMeta(&errs, &p.ObjectMeta)
	spec := &p.Spec
	ns := p.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	if sa := spec.ServiceAccount; sa != "" {
		if msg := dns1123Label(sa); msg != "" {
			errs.add("spec.serviceAccount", "%s", msg)
		} else if ns == identity.ControllerNamespace && sa == identity.ControllerServiceAccount {
			errs.add("spec.serviceAccount", "%s/%s is the controller's own identity, which no workload may receive", ns, sa)
		}
	}
	if spec.Code == nil && spec.ProxyCode == nil && spec.Unix == nil {
		errs.add("spec", "set code (which code may receive the identity), proxyCode (which proxy build may ask for it), unix (which local processes may claim it), or several")
	}
	if c := spec.Code; c != nil {
		validateCodePolicy(&errs, "spec.code", c)
	}
	if c := spec.ProxyCode; c != nil {
		validateCodePolicy(&errs, "spec.proxyCode", c)
	}
	if u := spec.Unix; u != nil {
		if ns == RootNamespace {
			errs.add("spec.unix", "is not allowed in %s, where the policy applies to every namespace: it would let these processes claim any identity of the mesh; write it in the workload's own namespace", RootNamespace)
		}
		validateUnixIDs(&errs, "spec.unix.uids", u.UIDs)
		validateUnixIDs(&errs, "spec.unix.gids", u.GIDs)
		if len(u.UIDs) == 0 && len(u.GIDs) == 0 && spec.ProxyCode == nil {
			errs.add("spec.unix", "names no uids or gids and the policy sets no proxyCode: any process that can reach the socket could claim the identity (code alone does not stop it: a process may start an admitted app as its child and present it); list uids or gids, or set proxyCode")
		}
	}
	return errs.errOrNil()
}

func validateCodePolicy(errs *FieldErrors, field string, c *CodePolicy) {
	if len(c.Digests) == 0 && len(c.Signers) == 0 {
		errs.add(field, "admits nothing: list digests, signers or both")
	}
	if len(c.Digests) > maxAttestationListLen {
		errs.add(field+".digests", "has %d entries, more than the %d allowed", len(c.Digests), maxAttestationListLen)
	}
	seen := make(map[string]int, len(c.Digests))
	for i, d := range c.Digests {
		path := fmt.Sprintf("%s.digests[%d]", field, i)
		if err := codedigest.Check(d); err != nil {
			errs.add(path, "%s", strings.TrimPrefix(err.Error(), "codedigest: "))
			continue
		}
		if j, dup := seen[d]; dup {
			errs.add(path, "duplicate digest (also %s.digests[%d])", field, j)
			continue
		}
		seen[d] = i
	}
	if len(c.Signers) > maxAttestationListLen {
		errs.add(field+".signers", "has %d entries, more than the %d allowed", len(c.Signers), maxAttestationListLen)
	}
	names := make(map[string]int, len(c.Signers))
	for i, s := range c.Signers {
		path := fmt.Sprintf("%s.signers[%d]", field, i)
		switch {
		case s.Name == "":
			errs.add(path+".name", "is required: it names the key in logs")
		case dns1123Label(s.Name) != "":
			errs.add(path+".name", "%s", dns1123Label(s.Name))
		default:
			if j, dup := names[s.Name]; dup {
				errs.add(path+".name", "duplicate signer %q (also %s.signers[%d])", s.Name, field, j)
			} else {
				names[s.Name] = i
			}
		}
		if _, err := ParseSignerKey(s.PublicKey); err != nil {
			errs.add(path+".publicKey", "%v", err)
		}
	}
}

func validateUnixIDs(errs *FieldErrors, path string, ids []int64) {
	if len(ids) > maxAttestationListLen {
		errs.add(path, "has %d entries, more than the %d allowed", len(ids), maxAttestationListLen)
	}
	seen := make(map[int64]int, len(ids))
	for i, id := range ids {
		p := fmt.Sprintf("%s[%d]", path, i)
		if id < 0 || id > maxUnixID {
			errs.add(p, "must be between 0 and %d", int64(maxUnixID))
			continue
		}
		if j, dup := seen[id]; dup {
			errs.add(p, "duplicate %d (also %s[%d])", id, path, j)
			continue
		}
		seen[id] = i
	}
}

// ParseSignerKey parses a CodeSigner's PublicKey: exactly one PEM
// "PUBLIC KEY" block holding an Ed25519 or ECDSA P-256 key, and nothing
// else but white space. It returns an ed25519.PublicKey or an
// *ecdsa.PublicKey.
func ParseSignerKey(s string) (any, error) {
	if s == "" {
		return nil, fmt.Errorf("is required: a PEM PUBLIC KEY block (Ed25519 or ECDSA P-256), as `openssl pkey -pubout` prints")
	}
	if len(s) > maxPublicKeyLen {
		return nil, fmt.Errorf("is %d bytes, more than the %d allowed", len(s), maxPublicKeyLen)
	}
	block, rest := pem.Decode([]byte(s))
	switch {
	case block == nil:
		return nil, fmt.Errorf("is not PEM: want a -----BEGIN PUBLIC KEY----- block")
	case block.Type != "PUBLIC KEY":
		return nil, fmt.Errorf("is a PEM %q block, want \"PUBLIC KEY\" (PKIX; convert with `openssl pkey -pubout`)", block.Type)
	case len(block.Headers) > 0:
		return nil, fmt.Errorf("has PEM headers; want a bare PUBLIC KEY block")
	case strings.TrimSpace(string(rest)) != "":
		return nil, fmt.Errorf("has more after the PUBLIC KEY block; one key per signer")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("does not parse: %v", err)
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return k, nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return k, nil
		}
		return nil, fmt.Errorf("is an ECDSA key on %s; use P-256 or Ed25519", k.Curve.Params().Name)
	default:
		return nil, fmt.Errorf("is a %T; use Ed25519 or ECDSA P-256", pub)
	}
}
