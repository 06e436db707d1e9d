package sandbox

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentapp "github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/agent/capool"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Pace of the traffic kept up during the CA rotation.
const (
	// handshakeEvery: a new connection (and handshake) this often.
	handshakeEvery = 75 * time.Millisecond
	// longLivedEvery: one line over the long-lived connection every this
	// many handshakes.
	longLivedEvery = 5
	// afterNewLeaf: traffic goes on this long once the server presents a
	// leaf of the new CA, to show that nothing breaks afterwards either.
	afterNewLeaf = 2 * time.Second
	// maxErrors: failures kept for the report.
	maxErrors = 5
)

// RotationResult is the traffic seen while the server's SPIFFE CA rotated.
type RotationResult struct {
	// OldCA and NewCA are the subject key ids (hex) of the active CA
	// before and after.
	OldCA, NewCA string
	// Handshakes counts the new connections made during the rotation;
	// Failures those that failed plus the failed exchanges over the
	// long-lived connection; Errors holds the first few.
	Handshakes, Failures int
	Errors               []string
	// ServerHandshakeErrors counts the handshakes that failed on the
	// server's side (whichever side refused).
	ServerHandshakeErrors int
	// LongLivedExchanges counts the lines answered over the one
	// connection kept open from before the rotation to after it.
	LongLivedExchanges int
	// HandshakesWithNewCA counts handshakes whose server leaf names the
	// new CA as its issuer.
	HandshakesWithNewCA int
	// ServerLeafCA is the CA (subject key id) whose signature the server's
	// leaf carried in the last handshake, checked against the pool.
	ServerLeafCA string
	// Promoted and NewLeaf are how long after the rotate request the new CA
	// became active and the server first presented a leaf of it; Took is
	// the whole rotation with its traffic.
	Promoted, NewLeaf, Took time.Duration
}

// caPool reads m's CA pool of signer.
func caPool(ctx context.Context, m *Member, namespace, signer string) (*signers.Pool, error) {
	var s corev1.Secret
	if err := m.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: capool.SecretName(signer)}, &s); err != nil {
		return nil, fmt.Errorf("reading the %s CA pool of %s: %w", signer, m.Name, err)
	}
	pool, err := signers.UnmarshalPool(s.Data[capool.PoolKey])
	if err != nil {
		return nil, fmt.Errorf("the %s CA pool of %s: %w", signer, m.Name, err)
	}
	return pool, nil
}

// rotateUnderTraffic rotates server's SPIFFE CA with `member-agent ca
// rotate` while the client connects to srv again and again and keeps one
// connection open, until the server presents a leaf of the new CA and a
// little longer. Any failed exchange fails it.
func rotateUnderTraffic(ctx context.Context, p Progress, server, clientMember *Member, srv *echoServer, cfg *tls.Config) (RotationResult, error) {
	var res RotationResult
	r := rotation{p: p, server: server, clientMember: clientMember, signer: signers.SPIFFESignerName, opts: agentapp.NewCAOptions(capool.RequestRotate), res: &res}
	pool, err := r.pool(ctx)
	if err != nil {
		return res, err
	}
	old, err := pool.Active()
	if err != nil {
		return res, err
	}
	res.OldCA = old.SKID()

	long, err := dialEcho(ctx, srv.Addr(), cfg)
	if err != nil {
		return res, fmt.Errorf("opening the long-lived connection: %w", err)
	}
	defer long.Close()
	if _, err := long.say("long-lived hello"); err != nil {
		return res, fmt.Errorf("the long-lived connection: %w", err)
	}

	p.Step("CA rotation: %s's SPIFFE CA rotates while %s keeps connecting to %s (a new connection every %s, plus one long-lived connection)",
		server.Name, demoClientPod, demoServerPod, handshakeEvery)
	var stop func() int
	r.traffic, stop = startTraffic(ctx, srv, cfg, long)
	defer stop()

	r.began = time.Now()
	err = r.drive(ctx)
	res.ServerHandshakeErrors = stop()
	t := r.traffic // run has returned: its counters are ours
	if ctx.Err() == nil {
		if _, err := long.say("long-lived goodbye"); err != nil {
			t.fail(fmt.Errorf("long-lived connection after the rotation: %w", err))
		} else {
			t.longLived++
		}
	}
	res.Took = time.Since(r.began)
	res.Handshakes, res.Failures, res.Errors, res.LongLivedExchanges = t.handshakes, t.failures, t.errs, t.longLived
	res.HandshakesWithNewCA = t.byIssuer[res.NewCA]
	if pool, perr := r.pool(ctx); perr != nil {
		err = errors.Join(err, perr)
	} else if t.lastLeaf != nil {
		for _, ca := range pool.CAs {
			if t.lastLeaf.CheckSignatureFrom(ca.Certificate) == nil {
				res.ServerLeafCA = ca.SKID()
			}
		}
	}
	p.Detail("%s (%d with the new CA's leaf), %s, %s on the server's side; %s over the long-lived connection",
		count(res.Handshakes, "handshake"), res.HandshakesWithNewCA, count(res.Failures, "failure"), count(res.ServerHandshakeErrors, "handshake error"), count(res.LongLivedExchanges, "exchange"))
	switch {
	case res.Failures > 0 || res.ServerHandshakeErrors > 0:
		return res, fmt.Errorf("the CA rotation broke traffic: %s in %s and %s over the long-lived connection, %s on the server's side; first failures: %s",
			count(res.Failures, "failure"), count(res.Handshakes, "handshake"), count(res.LongLivedExchanges, "exchange"), count(res.ServerHandshakeErrors, "handshake error"), strings.Join(res.Errors, "; "))
	case err != nil:
		return res, err
	case res.ServerLeafCA != res.NewCA:
		return res, fmt.Errorf("the server's last leaf was signed by CA %q, not the new CA %s", res.ServerLeafCA, res.NewCA)
	}
	return res, nil
}

// rotation is one CA rotation of the demo, under traffic.
type rotation struct {
	p                    Progress
	server, clientMember *Member
	signer               string
	opts                 *agentapp.CAOptions
	traffic              *traffic
	began                time.Time
	res                  *RotationResult
}

func (r *rotation) pool(ctx context.Context) (*signers.Pool, error) {
	return caPool(ctx, r.server, r.opts.Namespace, r.signer)
}

// drive asks for the rotation and follows it: promotion, the server's
// first leaf of the new CA, then a little more traffic. It returns early,
// without an error, as soon as an exchange fails: the caller reports
// failures.
func (r *rotation) drive(ctx context.Context) error {
	p, res, server := r.p, r.res, r.server
	kubeconfig := server.Kubeconfig
	if kubeconfig == "" {
		kubeconfig = "<" + server.Name + " kubeconfig>"
	}
	p.Detail("$ member-agent ca rotate --signer %s --kubeconfig %s", signers.Slug(r.signer), kubeconfig)
	var caOut bytes.Buffer
	err := agentapp.CA(ctx, server.Cluster.Config, r.opts, []string{r.signer}, &caOut)
	for _, line := range strings.Split(strings.TrimRight(caOut.String(), "\n"), "\n") {
		p.Detail("%s", line)
	}
	if err != nil {
		return fmt.Errorf("rotating the SPIFFE CA of %s: %w", server.Name, err)
	}
	pool, err := r.pool(ctx)
	if err != nil {
		return err
	}
	for _, ca := range pool.CAs {
		if ca.SKID() != res.OldCA && ca.State != signers.StateRetired {
			res.NewCA = ca.SKID()
		}
	}
	if res.NewCA == "" {
		return fmt.Errorf("the agent of %s acknowledged the rotation but its %s pool holds no new CA", server.Name, r.signer)
	}
	p.Detail("next CA %s is published; the agent promotes it once every member federating with %s (%s) has applied it, and its promotion delay has passed",
		res.NewCA, server.TrustDomain, r.clientMember.Name)

	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pool, err := r.pool(ctx)
		if err != nil {
			return r.traffic.failed(), nil // transient: the next poll reads again
		}
		active, err := pool.Active()
		return r.traffic.failed() || err == nil && active.SKID() == res.NewCA, nil
	})
	if err != nil {
		return fmt.Errorf("the new CA %s of %s was not promoted: %w; `member-agent ca status` and the hub's MemberCluster %s status say whether %s applied it",
			res.NewCA, server.Name, err, r.clientMember.Name, r.clientMember.Name)
	}
	if r.traffic.failed() {
		return nil
	}
	res.Promoted = time.Since(r.began)
	p.Detail("after %s: promoted, the new CA signs; %s is retired and stays published for 24h", seconds(res.Promoted), res.OldCA)

	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return r.traffic.failed() || r.traffic.withIssuer(res.NewCA) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("%s never presented a leaf of the new CA %s: %w; its kubelet refreshes its certificate at beginRefreshAt", demoServerPod, res.NewCA, err)
	}
	if r.traffic.failed() {
		return nil
	}
	res.NewLeaf = time.Since(r.began)
	p.Detail("after %s: %s presents a leaf of the new CA (its kubelet refreshed the certificate); traffic goes on for %s more", seconds(res.NewLeaf), demoServerPod, afterNewLeaf)
	select {
	case <-time.After(afterNewLeaf):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// traffic is the client's load during the rotation. Its counters are
// read once run has returned, or through withIssuer.
type traffic struct {
	addr string
	cfg  *tls.Config
	long *echoConn

	mu         sync.Mutex
	handshakes int
	failures   int
	errs       []string
	longLived  int
	byIssuer   map[string]int // server leaf's authority key id (hex) -> handshakes
	lastLeaf   *x509.Certificate
}

// startTraffic starts the client's load against srv. stop ends it and
// returns how many handshakes failed on the server's side until then. It
// reads that count before telling the client to stop: a handshake the stop
// cuts short fails on the server's side too (EOF), and is nobody's fault.
// A real refusal fails the client's exchange as well, which traffic counts.
func startTraffic(ctx context.Context, srv *echoServer, cfg *tls.Config, long *echoConn) (t *traffic, stop func() int) {
	t = &traffic{addr: srv.Addr(), cfg: cfg, long: long, byIssuer: map[string]int{}}
	before := srv.stats().failed
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { t.run(trafficCtx) })
	var serverErrors int
	stopOnce := sync.OnceFunc(func() {
		serverErrors = srv.stats().failed - before
		stopTraffic()
		wg.Wait()
	})
	return t, func() int { stopOnce(); return serverErrors }
}

func (t *traffic) run(ctx context.Context) {
	log := logr.FromContextOrDiscard(ctx)
	tick := time.NewTicker(handshakeEvery)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		_, cs, err := exchange(ctx, t.addr, t.cfg, fmt.Sprintf("handshake %d", n))
		if ctx.Err() != nil {
			return // stopped while dialing: not the server's doing
		}
		t.mu.Lock()
		t.handshakes++
		if err == nil {
			leaf := cs.PeerCertificates[0]
			t.byIssuer[hex.EncodeToString(leaf.AuthorityKeyId)]++
			t.lastLeaf = leaf
		}
		t.mu.Unlock()
		if err != nil {
			log.Error(err, "handshake failed during the CA rotation", "handshake", n)
			t.fail(fmt.Errorf("handshake %d: %w", n, err))
		}
		if n%longLivedEvery == 0 {
			if _, err := t.long.say(fmt.Sprintf("long-lived %d", n)); err != nil {
				log.Error(err, "the long-lived connection failed during the CA rotation")
				t.fail(fmt.Errorf("long-lived connection: %w", err))
			} else {
				t.mu.Lock()
				t.longLived++
				t.mu.Unlock()
			}
		}
	}
}

func (t *traffic) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures++
	if len(t.errs) < maxErrors {
		t.errs = append(t.errs, err.Error())
	}
}

func (t *traffic) failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failures > 0
}

func (t *traffic) withIssuer(skid string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byIssuer[skid]
}
