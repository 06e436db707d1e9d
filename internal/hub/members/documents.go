package members

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/oidcbundle"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Documents rebuilds the served documents from the informer cache on every
// change of a MemberCluster or TrustDomain. It runs on every replica (each
// serves reads), never writes to the API, and never touches the API on a
// request.
type Documents struct {
	Reader client.Reader
	Store  *oidcbundle.Store
	// Ready is closed after the first build, for the readiness probe.
	Ready chan struct{}
	built bool
	// served remembers what is in the Store, to drop what disappeared.
	members, domains map[string]bool
	// versions: the resourceVersion each member's documents were built
	// from; an unchanged member is not rebuilt.
	versions map[string]string
	anchors  anchorCache
}

// SetupWithManager re-builds on any member or trust-domain change, and
// once at start.
func (d *Documents) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{}}
	})
	// A hub with no MemberCluster and no TrustDomain gets no watch event:
	// without this build it would never be ready. Workers start after the
	// caches synced, so this build sees what there is.
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: &hubv1.MemberCluster{}}
	return ctrl.NewControllerManagedBy(mgr).
		Named("hub-documents").
		// Every replica serves reads, so every replica builds.
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Watches(&hubv1.MemberCluster{}, all, builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			return servedChanged(e.ObjectOld.(*hubv1.MemberCluster), e.ObjectNew.(*hubv1.MemberCluster))
		}})).
		Watches(&hubv1.TrustDomain{}, all).
		WatchesRawSource(source.Channel(start, all)).
		Complete(d)
}

// Reconcile rebuilds everything: the sets are small and a rebuild of one
// member costs microseconds; the Store serves the old documents until the
// new ones are in.
func (d *Documents) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	log := logr.FromContextOrDiscard(ctx)
	var mcs hubv1.MemberClusterList
	// Read-only: no copy of a thousand objects on every change.
	if err := d.Reader.List(ctx, &mcs, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	var tds hubv1.TrustDomainList
	if err := d.Reader.List(ctx, &tds, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	members, domains, versions := map[string]bool{}, map[string]bool{}, map[string]string{}
	byTD := map[string]*oidcbundle.TrustDomainBundle{}
	contributions := map[string][]contribution{} // member trust domain -> its members' SPIFFE anchors
	var changed []oidcbundle.Member
	for i := range mcs.Items {
		mc := &mcs.Items[i]
		if !meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionJoined) {
			continue
		}
		saNS, saName, err := mc.Spec.AgentServiceAccountRef()
		if err != nil {
			log.Error(err, "skipping a member with an invalid agentServiceAccount", "cluster", mc.Name)
			continue
		}
		m := oidcbundle.Member{
			Name:                mc.Name,
			Issuer:              mc.Spec.Issuer,
			TrustDomain:         mc.Spec.TrustDomain,
			JWKS:                []byte(mc.Status.JWKS),
			Anchors:             d.anchors.anchors(log, mc),
			AgentServiceAccount: saNS + "/" + saName,
			SPIFFESequence:      uint64(mc.Status.AnchorsSequence),
		}
		if d.versions[mc.Name] != mc.ResourceVersion {
			changed = append(changed, m)
		}
		versions[mc.Name] = mc.ResourceVersion
		members[mc.Name] = true
		if spiffe := m.Anchors[signers.SPIFFESignerName]; len(spiffe) > 0 {
			b := byTD[mc.Spec.TrustDomain]
			if b == nil {
				b = &oidcbundle.TrustDomainBundle{TrustDomain: mc.Spec.TrustDomain}
				byTD[mc.Spec.TrustDomain] = b
			}
			for _, a := range spiffe {
				contributions[mc.Spec.TrustDomain] = append(contributions[mc.Spec.TrustDomain], contribution{mc.Name, a})
			}
			// Not monotonic: it falls when a member leaves the trust domain
			// or is re-created (its anchorsSequence restarts). No value
			// derived from the members alone can be (any such value falls
			// back to what it was before a member joined, once it leaves);
			// that would take a counter persisted per trust domain.
			// go-spiffe's federation client does not compare sequences; a
			// consumer that did would only wait for the next change.
			b.Sequence += uint64(mc.Status.AnchorsSequence)
		}
	}
	for td, cs := range contributions {
		byTD[td].Anchors = sortedAnchors(cs)
	}
	d.anchors.endRound()
	for name, err := range d.Store.SetMembers(changed) {
		// The old documents stay served; the status is fixed by the next
		// report, and this member is rebuilt at the next round.
		log.Error(err, "cannot serve member documents", "cluster", name)
		delete(versions, name)
	}
	for _, td := range byName(tds.Items) {
		doc := td.CurrentBundle()
		if doc == "" || byTD[td.Spec.TrustDomain] != nil {
			continue // nothing fetched yet, a member trust domain (members win), or already served
		}
		anchors, seq, hint, err := parseSPIFFEBundle(td.Spec.TrustDomain, doc)
		if err != nil {
			log.Error(err, "skipping an unparsable fetched bundle", "trustDomain", td.Spec.TrustDomain)
			continue
		}
		byTD[td.Spec.TrustDomain] = &oidcbundle.TrustDomainBundle{TrustDomain: td.Spec.TrustDomain, Anchors: anchors, Sequence: seq, RefreshHint: hint}
	}
	for name, b := range byTD {
		if err := d.Store.SetTrustDomain(*b); err != nil {
			log.Error(err, "cannot serve trust domain bundle", "trustDomain", name)
			continue
		}
		domains[name] = true
	}
	for name := range d.members {
		if !members[name] {
			d.Store.DeleteMember(name)
		}
	}
	for name := range d.domains {
		if !domains[name] {
			d.Store.DeleteTrustDomain(name)
		}
	}
	d.members, d.domains, d.versions = members, domains, versions
	if !d.built {
		d.built = true
		close(d.Ready)
	}
	return reconcile.Result{}, nil
}

// contribution is one SPIFFE anchor of a member to its trust domain's bundle.
type contribution struct {
	member string
	cert   *x509.Certificate
}

// sortedAnchors orders a trust domain's anchors by member name, then
// certificate bytes: the informer lists in no fixed order, and the same
// content must be the same document (body and ETag) after every rebuild
// and on every replica.
func sortedAnchors(cs []contribution) []*x509.Certificate {
	slices.SortFunc(cs, func(a, b contribution) int {
		return cmp.Or(strings.Compare(a.member, b.member), bytes.Compare(a.cert.Raw, b.cert.Raw))
	})
	out := make([]*x509.Certificate, len(cs))
	for i, c := range cs {
		out[i] = c.cert
	}
	return out
}

// byName orders TrustDomains by object name, so that of several for one
// trust domain every replica serves the same.
func byName(tds []hubv1.TrustDomain) []*hubv1.TrustDomain {
	out := make([]*hubv1.TrustDomain, len(tds))
	for i := range tds {
		out[i] = &tds[i]
	}
	slices.SortFunc(out, func(a, b *hubv1.TrustDomain) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// servedChanged: whether an update touches what the documents are made of.
// Every report rewrites lastReportTime (and may flip Ready); rebuilding
// every member's documents for that would be work for nothing.
func servedChanged(old, cur *hubv1.MemberCluster) bool {
	joined := func(mc *hubv1.MemberCluster) bool {
		return meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionJoined)
	}
	return !equality.Semantic.DeepEqual(old.Spec, cur.Spec) || joined(old) != joined(cur) ||
		old.Status.JWKS != cur.Status.JWKS || old.Status.AnchorsSequence != cur.Status.AnchorsSequence ||
		!equality.Semantic.DeepEqual(old.Status.Anchors, cur.Status.Anchors)
}

// parseSPIFFEBundle reads a bundle fetched from an external endpoint.
func parseSPIFFEBundle(trustDomain, doc string) ([]*x509.Certificate, uint64, time.Duration, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, 0, 0, err
	}
	b, err := spiffebundle.Parse(td, []byte(doc))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("bundle of %s: %w", trustDomain, err)
	}
	seq, _ := b.SequenceNumber()
	hint, _ := b.RefreshHint()
	return b.X509Authorities(), seq, hint, nil
}
