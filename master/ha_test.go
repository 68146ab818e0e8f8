package master_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master"
)

// clusterView is the part of GET /api/cluster issue 16 adds.
type clusterView struct {
	TotalAgents int `json:"total_agents"`
	Masters     []struct {
		ID       string `json:"id"`
		GRPCAddr string `json:"grpc_addr"`
		HTTPURL  string `json:"http_url"`
		Leader   bool   `json:"leader"`
	} `json:"masters"`
	Leader string `json:"leader"`
	Store  struct {
		Backend string `json:"backend"`
		OK      bool   `json:"ok"`
		Members []struct {
			Endpoint string `json:"endpoint"`
			OK       bool   `json:"ok"`
		} `json:"members"`
	} `json:"store"`
}

func getCluster(t *testing.T, base, token string) clusterView {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/cluster", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/cluster = %d", resp.StatusCode)
	}
	var v clusterView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// One master on bbolt: it is the only master and the leader; the store is bbolt.
func TestClusterStatusAlone(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	addrs, _ := runMaster(t, data, &testutil.SyncBuffer{})
	creds, err := opauth.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	v := getCluster(t, "http://"+addrs.HTTP, creds.Token)
	if len(v.Masters) != 1 || !v.Masters[0].Leader || v.Leader != v.Masters[0].ID || v.Store.Backend != "bbolt" || !v.Store.OK {
		t.Fatalf("/api/cluster of a lone master: %+v", v)
	}
	if v.Masters[0].GRPCAddr != addrs.GRPC {
		t.Errorf("master grpc_addr %q, want %q", v.Masters[0].GRPCAddr, addrs.GRPC)
	}
}

// Two masters on one etcd (--store etcd): each lists both, the same
// leader, and etcd healthy; stopping the leader hands over to the other.
func TestClusterStatusOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	etcd := etcdtest.Start(t)
	type running struct {
		addrs master.Addrs
		data  string
		stop  func()
	}
	start := func(id string, binaries map[string]string) running {
		data := filepath.Join(t.TempDir(), "data")
		bin := filepath.Join(filepath.Dir(data), "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range binaries {
			if err := os.WriteFile(filepath.Join(bin, name), []byte(content), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan master.Addrs, 1)
		done := make(chan error, 1)
		go func() {
			done <- master.Run(ctx, master.Options{
				HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", BinariesDir: filepath.Join(filepath.Dir(data), "bin"), DataDir: data,
				ShutdownTimeout: 5 * time.Second, Ready: func(a master.Addrs) { ready <- a },
				Store: master.StoreOptions{Backend: master.StoreEtcd, EtcdEndpoints: etcd.Endpoints(), MasterID: id, LeaderLease: 2 * time.Second},
			})
		}()
		var a master.Addrs
		select {
		case a = <-ready:
		case err := <-done:
			t.Fatalf("master %s: %v", id, err)
		case <-time.After(60 * time.Second):
			t.Fatalf("master %s not ready", id)
		}
		stopped := false
		stop := func() {
			if !stopped {
				stopped = true
				cancel()
				if err := <-done; err != nil {
					t.Errorf("master %s: %v", id, err)
				}
			}
		}
		t.Cleanup(stop)
		return running{a, data, stop}
	}
	const held = "storage-server-1.0.0-linux-x86_64"
	m0, m1 := start("m0", map[string]string{held: "the bytes m0 holds"}), start("m1", nil)
	token := func(r running) string {
		c, err := opauth.Load(r.data)
		if err != nil {
			t.Fatal(err)
		}
		return c.Token
	}
	// One trust for both (issue 16): the same operator token and CA.
	if token(m0) != token(m1) {
		t.Error("the two masters have different operator tokens")
	}
	ca0, _ := os.ReadFile(filepath.Join(m0.data, "tls", "ca.crt"))
	ca1, _ := os.ReadFile(filepath.Join(m1.data, "tls", "ca.crt"))
	if len(ca0) == 0 || string(ca0) != string(ca1) {
		t.Error("the two masters have different CAs")
	}
	var v0, v1 clusterView
	deadline := time.Now().Add(15 * time.Second)
	for {
		v0, v1 = getCluster(t, "http://"+m0.addrs.HTTP, token(m0)), getCluster(t, "http://"+m1.addrs.HTTP, token(m1))
		if len(v0.Masters) == 2 && len(v1.Masters) == 2 && v0.Leader != "" && v0.Leader == v1.Leader {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("masters do not agree: m0 sees %+v, m1 sees %+v", v0, v1)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// m1 does not hold the binary m0 publishes: it redirects there.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	deadline = time.Now().Add(15 * time.Second)
	for {
		resp, err := noFollow.Get("http://" + m1.addrs.HTTP + "/binaries/" + held)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode == http.StatusTemporaryRedirect && strings.HasPrefix(loc, "http://"+m0.addrs.HTTP+"/binaries/"+held) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET a binary only m0 holds from m1 = %d Location %q, want 307 to m0", resp.StatusCode, loc)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v0.Store.Backend != "etcd" || !v0.Store.OK || len(v0.Store.Members) != 1 || !v0.Store.Members[0].OK {
		t.Fatalf("store health: %+v", v0.Store)
	}
	leader, other := m0, m1
	if v0.Leader == "m1" {
		leader, other = m1, m0
	}
	was := v0.Leader
	leader.stop() // resigns on the way out: the other leads at once
	deadline = time.Now().Add(10 * time.Second)
	for {
		v := getCluster(t, "http://"+other.addrs.HTTP, token(other))
		if len(v.Masters) == 1 && v.Leader != "" && v.Leader != was {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hand-over after the leader stopped: %+v", v)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
