package testutil

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ControlPlaneOptions says where the control plane runs; zero values are
// the defaults.
type ControlPlaneOptions struct {
	// NetNS is the path of a network namespace etcd and kube-apiserver run
	// in (through nsenter), so that nodes simulated as namespaces can reach
	// it over links the test makes. Default: the caller's namespace.
	NetNS string
	// Address is the apiserver's bind and advertise address; it must exist
	// in NetNS. Default 127.0.0.1.
	Address string
	// ServiceCIDR is the service cluster IP range. Default 10.96.0.0/16.
	ServiceCIDR string
}

// ControlPlane is a real etcd and kube-apiserver with private state, stopped
// and removed when the test ends.
type ControlPlane struct {
	// URL is the apiserver's https://Address:port.
	URL string
	// AdminKubeconfig is a kubeconfig of a system:masters client cert.
	AdminKubeconfig string
	// CAFile is the PEM of the CA every serving and client cert comes from.
	CAFile string

	t         T
	opts      ControlPlaneOptions
	dir       string
	ca        *certKey
	apiArgs   []string
	etcd      *proc
	apiserver *proc
	admin     *kubernetes.Clientset
}

// StartControlPlane starts etcd and kube-apiserver and waits until the
// apiserver is ready. Binaries come from K8sTools.
func StartControlPlane(t T, opts ControlPlaneOptions) *ControlPlane {
	t.Helper()
	requireRoot(t)
	if opts.Address == "" {
		opts.Address = "127.0.0.1"
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = "10.96.0.0/16"
	}
	cp := &ControlPlane{t: t, opts: opts, dir: t.TempDir()}
	t.Cleanup(cp.logTailsOnFailure)
	start := time.Now()
	etcdHealth := cp.startEtcd()
	cp.writeCerts() // while etcd starts
	cp.wait(cp.etcd, &http.Client{Transport: &http.Transport{DialContext: cp.dial}}, etcdHealth)
	etcdUp := time.Since(start)
	cp.StartAPIServer()
	logf(t, "control plane up in %v (etcd healthy after %v), %s", time.Since(start).Round(time.Millisecond), etcdUp.Round(time.Millisecond), cp.URL)
	return cp
}

// startEtcd starts etcd on free loopback ports and returns its health URL.
func (cp *ControlPlane) startEtcd() string {
	t := cp.t
	t.Helper()
	bin, err := K8sTool("etcd")
	if err != nil {
		t.Fatalf("%v", err)
	}
	client := "http://127.0.0.1:" + strconv.Itoa(cp.freePort("127.0.0.1"))
	peer := "http://127.0.0.1:" + strconv.Itoa(cp.freePort("127.0.0.1"))
	// No fsync and a small quota: the data dies with the test.
	cp.etcd = cp.start("etcd", bin,
		"--name=nswire", "--data-dir="+filepath.Join(cp.dir, "etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=nswire="+peer, "--unsafe-no-fsync",
		"--quota-backend-bytes="+strconv.Itoa(256<<20), "--log-level=warn")
	cp.apiArgs = []string{"--etcd-servers=" + client}
	return client + "/health"
}

// writeCerts makes the CA, the apiserver's serving cert and service-account
// key pair, and the admin kubeconfig, and fixes the apiserver's port: a
// restarted apiserver keeps them all.
func (cp *ControlPlane) writeCerts() {
	t := cp.t
	t.Helper()
	port := cp.freePort(cp.opts.Address)
	cp.URL = "https://" + net.JoinHostPort(cp.opts.Address, strconv.Itoa(port))
	cp.CAFile = filepath.Join(cp.dir, "ca.crt")
	cp.apiArgs = append(cp.apiArgs, cp.apiserverFlags(port)...)
	ca, err := newCA()
	if err != nil {
		t.Fatalf("CA: %v", err)
	}
	cp.ca = ca
	hosts := []string{cp.opts.Address, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if ip, err := firstServiceIP(cp.opts.ServiceCIDR); err == nil {
		hosts = append(hosts, ip)
	}
	serving, err := ca.issue("kube-apiserver", nil, hosts, x509.ExtKeyUsageServerAuth)
	if err != nil {
		t.Fatalf("serving cert: %v", err)
	}
	saPub, saKey, err := newRSAKeyPair()
	if err != nil {
		t.Fatalf("service-account key: %v", err)
	}
	files := map[string][]byte{
		"ca.crt": ca.certPEM(), "apiserver.crt": serving.certPEM(), "apiserver.key": serving.keyPEM(),
		"sa.pub": saPub, "sa.key": saKey,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(cp.dir, name), data, 0o600); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	cp.AdminKubeconfig = cp.clientCertKubeconfig(t, "admin", "system:masters")
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) with
// the same certificates, port and etcd, and waits for /readyz.
func (cp *ControlPlane) StartAPIServer() {
	t := cp.t
	t.Helper()
	if cp.apiserver != nil {
		t.Fatalf("kube-apiserver is already running")
	}
	bin, err := K8sTool("kube-apiserver")
	if err != nil {
		t.Fatalf("%v", err)
	}
	cp.apiserver = cp.start("kube-apiserver", bin, cp.apiArgs...)
	cp.wait(cp.apiserver, cp.adminHTTP(), cp.URL+"/readyz")
}

// StopAPIServer stops kube-apiserver, keeping etcd and every file: an
// outage clients see as refused connections.
func (cp *ControlPlane) StopAPIServer() {
	cp.t.Helper()
	if cp.apiserver == nil {
		cp.t.Fatalf("kube-apiserver is not running")
	}
	cp.apiserver.stop()
	cp.apiserver = nil
}

// apiserverFlags are the flags of a secure-only apiserver with RBAC and
// the Node authorizer, as on a real cluster.
func (cp *ControlPlane) apiserverFlags(port int) []string {
	f := func(name string) string { return filepath.Join(cp.dir, name) }
	return []string{
		"--bind-address=" + cp.opts.Address, "--advertise-address=" + cp.opts.Address,
		"--secure-port=" + strconv.Itoa(port), "--cert-dir=" + f("apiserver-certs"),
		"--tls-cert-file=" + f("apiserver.crt"), "--tls-private-key-file=" + f("apiserver.key"),
		"--client-ca-file=" + cp.CAFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f("sa.pub"), "--service-account-signing-key-file=" + f("sa.key"),
		"--service-cluster-ip-range=" + cp.opts.ServiceCIDR,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		// The endpoints of the kubernetes service reject loopback addresses.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true", "--profiling=false",
	}
}

// Admin returns a client of the system:masters user.
func (cp *ControlPlane) Admin() *kubernetes.Clientset {
	cp.t.Helper()
	if cp.admin == nil {
		cp.admin = cp.Client(cp.t, cp.AdminKubeconfig)
	}
	return cp.admin
}

// Client returns a client for a kubeconfig of this control plane. With
// NetNS set it connects from inside that namespace.
func (cp *ControlPlane) Client(t T, kubeconfig string) *kubernetes.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", kubeconfig, err)
	}
	cfg.Dial = cp.dial
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client of %s: %v", kubeconfig, err)
	}
	return c
}

// ServiceAccountKubeconfig creates namespace/name as a ServiceAccount if
// missing and writes a kubeconfig holding a token issued for it through
// the TokenRequest API: what a DaemonSet's pod authenticates with.
func (cp *ControlPlane) ServiceAccountKubeconfig(t T, namespace, name string) string {
	t.Helper()
	ctx := context.Background()
	c := cp.Admin().CoreV1()
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := c.Namespaces().Create(ctx, nsObj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create serviceaccount %s/%s: %v", namespace, name, err)
	}
	day := int64(24 * 3600)
	req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &day}}
	tok, err := c.ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", namespace, name, err)
	}
	user := "system:serviceaccount:" + namespace + ":" + name
	return cp.writeKubeconfig(t, user, &clientcmdapi.AuthInfo{Token: tok.Status.Token})
}

// KubeletKubeconfig writes a kubeconfig of a client cert for the kubelet
// of nodeName (CN=system:node:<name>, O=system:nodes), which the Node
// authorizer and NodeRestriction know.
func (cp *ControlPlane) KubeletKubeconfig(t T, nodeName string) string {
	t.Helper()
	user := "system:node:" + nodeName
	return cp.clientCertKubeconfig(t, user, "system:nodes")
}

func (cp *ControlPlane) clientCertKubeconfig(t T, user, group string) string {
	t.Helper()
	cert, err := cp.ca.issue(user, []string{group}, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		t.Fatalf("client cert %s: %v", user, err)
	}
	return cp.writeKubeconfig(t, user, &clientcmdapi.AuthInfo{
		ClientCertificateData: cert.certPEM(), ClientKeyData: cert.keyPEM(),
	})
}

// writeKubeconfig writes a kubeconfig of auth against this control plane
// into the test's temp dir and returns its path.
func (cp *ControlPlane) writeKubeconfig(t T, user string, auth *clientcmdapi.AuthInfo) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["nswire"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthorityData: cp.ca.certPEM()}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["nswire"] = &clientcmdapi.Context{Cluster: "nswire", AuthInfo: user}
	cfg.CurrentContext = "nswire"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	return path
}

// adminHTTP is an HTTP client of the admin cert, for /readyz.
func (cp *ControlPlane) adminHTTP() *http.Client {
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig)
	if err != nil {
		cp.t.Fatalf("admin kubeconfig: %v", err)
	}
	cert, err := tls.X509KeyPair(cfg.CertData, cfg.KeyData)
	if err != nil {
		cp.t.Fatalf("admin cert: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cfg.CAData)
	tr := &http.Transport{DialContext: cp.dial, TLSClientConfig: &tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{cert},
	}}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// wait polls url until it answers 200, failing early if p exits: an HTTP
// endpoint is the readiness signal both daemons give.
func (cp *ControlPlane) wait(p *proc, c *http.Client, url string) {
	t := cp.t
	t.Helper()
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before %s answered; log %s", p.name, p.cmd.ProcessState, url, p.log)
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("%s not ready: %s: %v", p.name, url, last)
}

// dial connects from inside NetNS (if set): a socket belongs to the
// namespace it was created in.
func (cp *ControlPlane) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if cp.opts.NetNS == "" {
		return d.DialContext(ctx, network, addr)
	}
	var c net.Conn
	err := ns.WithNetNSPath(cp.opts.NetNS, func(ns.NetNS) error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// freePort asks the kernel of NetNS for a free TCP port on addr.
func (cp *ControlPlane) freePort(addr string) int {
	cp.t.Helper()
	var port int
	listen := func() error {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	}
	var err error
	if cp.opts.NetNS == "" {
		err = listen()
	} else {
		err = ns.WithNetNSPath(cp.opts.NetNS, func(ns.NetNS) error { return listen() })
	}
	if err != nil {
		cp.t.Fatalf("free port on %s: %v", addr, err)
	}
	return port
}

// start runs a daemon in NetNS, stopped when the test ends.
func (cp *ControlPlane) start(name, bin string, args ...string) *proc {
	cp.t.Helper()
	if cp.opts.NetNS != "" {
		args = append([]string{"--net=" + cp.opts.NetNS, "--", bin}, args...)
		bin = "nsenter"
	}
	p, err := startProc(cp.dir, name, bin, args...)
	if err != nil {
		cp.t.Fatalf("start %s: %v", name, err)
	}
	cp.t.Cleanup(p.stop)
	return p
}

// logTailsOnFailure shows the end of each daemon's log when the test
// failed, so that a CI failure can be read without the temp dir.
func (cp *ControlPlane) logTailsOnFailure() {
	tb, ok := cp.t.(interface{ Failed() bool })
	if !ok || !tb.Failed() {
		return
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		path := filepath.Join(cp.dir, name+".log")
		if b, err := os.ReadFile(path); err == nil {
			logf(cp.t, "last lines of %s:\n%s", path, tail(b, 40))
		}
	}
}

// logf logs through t when it can (testing.TB), else not at all.
func logf(t T, format string, args ...any) {
	t.Helper()
	if l, ok := t.(interface{ Logf(string, ...any) }); ok {
		l.Logf(format, args...)
	}
}

// K8sTool returns the path of "etcd", "kube-apiserver" or "kubelet".
func K8sTool(name string) (string, error) {
	dir, err := K8sTools()
	if err != nil {
		return "", err
	}
	sub := "k8s-" + K8sVersion
	if name == "etcd" {
		sub = "etcd-" + EtcdVersion
	}
	return filepath.Join(dir, sub, name), nil
}

// Versions of the control plane, as pinned in scripts/k8s-tools.sh.
const (
	EtcdVersion = "v3.6.16"
	K8sVersion  = "v1.34.4"
)

var k8sTools struct {
	sync.Once
	dir string
	err error
}

// K8sTools returns the tools cache holding etcd-<EtcdVersion>/etcd and
// k8s-<K8sVersion>/{kube-apiserver,kubelet}: $NSWIRE_TOOLS, or nswire in
// the user cache. It runs scripts/k8s-tools.sh (found above the working
// directory) when they are missing, so that `go test` alone works.
func K8sTools() (string, error) {
	k8sTools.Do(func() { k8sTools.dir, k8sTools.err = buildK8sTools() })
	return k8sTools.dir, k8sTools.err
}

func buildK8sTools() (string, error) {
	dir := os.Getenv("NSWIRE_TOOLS")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(cache, "nswire")
	}
	bins := []string{"etcd-" + EtcdVersion + "/etcd", "k8s-" + K8sVersion + "/kube-apiserver", "k8s-" + K8sVersion + "/kubelet"}
	missing := func() error {
		for _, b := range bins {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				return err
			}
		}
		return nil
	}
	if missing() == nil {
		return dir, nil
	}
	script, err := findUp("scripts/k8s-tools.sh")
	if err != nil {
		return "", fmt.Errorf("control plane binaries missing in %s (run scripts/k8s-tools.sh): %w", dir, err)
	}
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "NSWIRE_TOOLS="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", script, err, out)
	}
	return dir, missing()
}

// findUp finds rel in the working directory or one above it.
func findUp(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s not found above the working directory", rel)
		}
		dir = parent
	}
}

// proc is a daemon in its own process group, logging to a file.
type proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{} // closed once the process is reaped
}

func startProc(dir, name, bin string, args ...string) (*proc, error) {
	log := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own group: a signal to the test's group (^C) does not race our
	// ordered stop. Pdeathsig: no daemon outlives a killed test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		return nil, err
	}
	p := &proc{name: name, log: log, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the process group, SIGKILL after a grace period,
// and waits until the process is reaped. Calling it again does nothing.
func (p *proc) stop() {
	pgid := -p.cmd.Process.Pid
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(pgid, syscall.SIGKILL)
		<-p.done
	}
}

// spawner forks every daemon from one OS thread that never exits: the
// kernel sends Pdeathsig when the forking *thread* ends, and Go ends the
// thread of any goroutine that exits while locked (namespace helpers do).
var spawner = sync.OnceValue(func() chan func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range ch {
			f()
		}
	}()
	return ch
})

func spawn(cmd *exec.Cmd) error {
	errc := make(chan error)
	spawner() <- func() { errc <- cmd.Start() }
	return <-errc
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// certKey is a certificate and its private key.
type certKey struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA() (*certKey, error) {
	return newCert(&x509.Certificate{
		Subject: pkix.Name{CommonName: "nswire-test-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil)
}

// issue signs a leaf cert for cn in groups (the subject's O, which the
// apiserver reads as groups), valid for hosts (IPs or DNS names).
func (ca *certKey) issue(cn string, groups, hosts []string, usage x509.ExtKeyUsage) (*certKey, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: groups},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return newCert(tmpl, ca)
}

// newCert makes a P-256 key and signs tmpl with parent (itself if nil).
func newCert(tmpl *x509.Certificate, parent *certKey) (*certKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(7 * 24 * time.Hour)
	signer, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &certKey{cert: cert, key: key}, err
}

func (c *certKey) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
}

func (c *certKey) keyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		panic(err) // an ECDSA key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// newRSAKeyPair returns the PEM public and private key that sign and
// verify service-account tokens (RS256, what every client expects).
func newRSAKeyPair() (pub, priv []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	pub = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	priv = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return pub, priv, nil
}

// firstServiceIP is the address the kubernetes service gets: the range's
// first host address.
func firstServiceIP(cidr string) (string, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return "", err
	}
	return p.Masked().Addr().Next().String(), nil
}
