package restore

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/libcni"

	"github.com/nswire/nswire/pkg/intent"
	"github.com/nswire/nswire/pkg/ipam"
)

// pluginType is the "type" of nswire's plugin in a network config.
const pluginType = "nswire"

// confExtensions are the files runtimes read from the conf dir.
var confExtensions = []string{".conf", ".conflist", ".json"}

// network is one nswire network of the conf dir and where its intents are.
type network struct {
	name string
	dirs []string // intent directories, one per distinct dataDir
}

// findNetworks lists the nswire networks of confDir as runtimes find
// them. A file that does not parse is someone's problem, not a loss of
// state: it is returned as a warning and skipped, as runtimes skip it.
func findNetworks(confDir string) ([]network, []string, error) {
	files, err := libcni.ConfFiles(confDir, confExtensions)
	if err != nil {
		return nil, nil, fmt.Errorf("conf dir %s: %w", confDir, err)
	}
	slices.Sort(files)
	var nets []network
	var warnings []string
	for _, file := range files {
		list, err := readConfList(file)
		if err != nil {
			warnings = append(warnings, err.Error())
			continue
		}
		for _, p := range list.Plugins {
			if p.Network.Type != pluginType {
				continue
			}
			// ADD falls back to the default dataDir when a delegated
			// IPAM's section is not host-local's: read both.
			for _, dir := range []string{dataDir(list.Name, p), ipam.DefaultDataDir} {
				nets = addNetwork(nets, list.Name, intent.Dir(dir, list.Name))
			}
		}
	}
	return nets, warnings, nil
}

// readConfList reads a .conflist as a list and a single config as a list
// of one, like libcni and the runtimes built on it.
func readConfList(file string) (*libcni.NetworkConfigList, error) {
	if filepath.Ext(file) == ".conflist" {
		return libcni.ConfListFromFile(file)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	conf, err := libcni.NetworkPluginConfFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return libcni.ConfListFromConf(conf)
}

// dataDir is the ipam dataDir of the plugin's config with the list's name
// injected, as the runtime sends it; host-local's default when unset.
func dataDir(name string, p *libcni.PluginConfig) string {
	conf, err := libcni.InjectConf(p, map[string]any{"name": name})
	if err != nil {
		return ipam.DefaultDataDir
	}
	dir, err := ipam.DataDir(conf.Bytes)
	if err != nil {
		return ipam.DefaultDataDir
	}
	return dir
}

// addNetwork adds dir to the network name, once: several files may name
// the same network (a runtime uses one of them; intents are where ADD put
// them, so all are read).
func addNetwork(nets []network, name, dir string) []network {
	for i := range nets {
		if nets[i].name == name {
			if !slices.Contains(nets[i].dirs, dir) {
				nets[i].dirs = append(nets[i].dirs, dir)
			}
			return nets
		}
	}
	return append(nets, network{name: name, dirs: []string{dir}})
}
