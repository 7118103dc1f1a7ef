package attest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeAPI is an API server with tokens and pods, for the Kubernetes
// attestor.
type fakeAPI struct {
	reviews   map[string]*TokenReview // by token
	pods      map[string]*Pod         // by namespace/name
	reviewErr error
	podErr    error
	asked     [][]string // audiences of each review
}

func (f *fakeAPI) ReviewToken(_ context.Context, token string, audiences []string) (*TokenReview, error) {
	f.asked = append(f.asked, audiences)
	if f.reviewErr != nil {
		return nil, f.reviewErr
	}
	if r, ok := f.reviews[token]; ok {
		return r, nil
	}
	return &TokenReview{Error: "invalid bearer token"}, nil
}

func (f *fakeAPI) GetPod(_ context.Context, ns, name string) (*Pod, error) {
	if f.podErr != nil {
		return nil, f.podErr
	}
	if p, ok := f.pods[ns+"/"+name]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("pods %q: %w", name, ErrPodNotFound)
}

func boundReview(ns, sa, pod, uid string) *TokenReview {
	return &TokenReview{
		Authenticated: true,
		Username:      "system:serviceaccount:" + ns + ":" + sa,
		Audiences:     []string{DefaultAudience},
		Extra: map[string][]string{
			ExtraPodName: {pod},
			ExtraPodUID:  {uid},
		},
	}
}

func TestKubernetes(t *testing.T) {
	running := func() *Pod {
		return &Pod{Namespace: "shop", Name: "web-1", UID: "uid-1", ServiceAccountName: "web", NodeName: "node-a", Phase: "Running"}
	}
	tests := []struct {
		name   string
		review func(r *TokenReview)
		pod    func(p *Pod) // nil pod func keeps the pod; set p.Name = "" to remove it
		ev     *KubernetesEvidence
		api    func(f *fakeAPI)
		reason string
	}{
		{name: "bound token of a running pod"},
		{name: "token with the node name", review: func(r *TokenReview) { r.Extra[ExtraNodeName] = []string{"node-a"} }},
		{name: "no evidence", ev: &KubernetesEvidence{}, reason: ReasonBadEvidence},
		{name: "no node claimed", ev: &KubernetesEvidence{Token: "tok"}, reason: ReasonBadEvidence},
		{name: "oversized token", ev: &KubernetesEvidence{Token: strings.Repeat("a", 16<<10+1), NodeName: "node-a"}, reason: ReasonBadEvidence},
		{name: "unknown token", ev: &KubernetesEvidence{Token: "forged", NodeName: "node-a"}, reason: ReasonTokenRejected},
		{name: "API server down", api: func(f *fakeAPI) { f.reviewErr = errors.New("connection refused") }, reason: ReasonAPIUnavailable},
		{name: "token for another audience", review: func(r *TokenReview) { r.Audiences = []string{"https://kubernetes.default.svc"} }, reason: ReasonWrongAudience},
		{name: "a user's token", review: func(r *TokenReview) { r.Username = "alice" }, reason: ReasonTokenRejected},
		{name: "malformed service account user", review: func(r *TokenReview) { r.Username = "system:serviceaccount:shop" }, reason: ReasonTokenRejected},
		{name: "invalid namespace name", review: func(r *TokenReview) { r.Username = "system:serviceaccount:Shop:web" }, reason: ReasonTokenRejected},
		{name: "the controller's service account", review: func(r *TokenReview) {
			r.Username = "system:serviceaccount:rampart-system:rampart-controller"
		}, reason: ReasonReservedIdentity},
		{name: "legacy secret token", review: func(r *TokenReview) { r.Extra = nil }, reason: ReasonTokenNotBound},
		{name: "two pod names", review: func(r *TokenReview) { r.Extra[ExtraPodName] = []string{"web-1", "web-2"} }, reason: ReasonTokenNotBound},
		{name: "token issued on another node", review: func(r *TokenReview) { r.Extra[ExtraNodeName] = []string{"node-b"} }, reason: ReasonNodeMismatch},
		{name: "pod gone", pod: func(p *Pod) { p.Name = "" }, reason: ReasonPodNotFound},
		{name: "pod replaced by one of the same name", pod: func(p *Pod) { p.UID = "uid-2" }, reason: ReasonPodNotFound},
		{name: "pod lookup fails", api: func(f *fakeAPI) { f.podErr = errors.New("timeout") }, reason: ReasonAPIUnavailable},
		{name: "pod of another service account", pod: func(p *Pod) { p.ServiceAccountName = "admin" }, reason: ReasonPodMismatch},
		{name: "pod on another node", pod: func(p *Pod) { p.NodeName = "node-b" }, reason: ReasonNodeMismatch},
		{name: "pod pending", pod: func(p *Pod) { p.Phase = "Pending" }, reason: ReasonPodNotRunning},
		{name: "pod terminating", pod: func(p *Pod) { p.Terminating = true }, reason: ReasonPodNotRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			review := boundReview("shop", "web", "web-1", "uid-1")
			if tt.review != nil {
				tt.review(review)
			}
			pod := running()
			if tt.pod != nil {
				tt.pod(pod)
			}
			api := &fakeAPI{reviews: map[string]*TokenReview{"tok": review}, pods: map[string]*Pod{}}
			if pod.Name != "" {
				api.pods["shop/web-1"] = pod
			}
			if tt.api != nil {
				tt.api(api)
			}
			k, err := NewKubernetes(KubernetesConfig{TrustDomain: td, Reviewer: api, Pods: api})
			if err != nil {
				t.Fatal(err)
			}
			ev := tt.ev
			if ev == nil {
				ev = &KubernetesEvidence{Token: "tok", NodeName: "node-a"}
			}
			res, err := k.Attest(t.Context(), Evidence{Kubernetes: ev, Requested: workloadID("shop", "admin")})
			if tt.reason != "" {
				wantReason(t, err, tt.reason)
				return
			}
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if want := (Result{Attestor: AttestorKubernetes, ID: workloadID("shop", "web")}); res != want {
				t.Errorf("Result = %+v, want %+v", res, want)
			}
			if len(api.asked) != 1 || !cmp.Equal(api.asked[0], []string{DefaultAudience}) {
				t.Errorf("reviews asked for audiences %v, want one for [%s]", api.asked, DefaultAudience)
			}
		})
	}
	t.Run("no evidence at all", func(t *testing.T) {
		k, err := NewKubernetes(KubernetesConfig{TrustDomain: td, Reviewer: &fakeAPI{}, Pods: &fakeAPI{}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = k.Attest(t.Context(), Evidence{})
		wantReason(t, err, ReasonBadEvidence)
	})
	t.Run("config", func(t *testing.T) {
		if _, err := NewKubernetes(KubernetesConfig{}); err == nil {
			t.Error("NewKubernetes with an empty config succeeded")
		}
	})
}
