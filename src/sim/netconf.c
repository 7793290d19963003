/* netconf: netN as parse_net + print_net leave it (see netconf.h). */
#include "sim/netconf.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/xalloc.h"

#define NET_ITEMS 16 /* the net format has 10 keys */

/* qemu-server's $nic_model_list: "<model>=<mac>" is a key alias */
static const char *const models[] = {
    "e1000",    "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e",  "i82551", "i82557b",
    "i82559er", "ne2k_isa",      "ne2k_pci",      "pcnet",         "rtl8139", "virtio", "vmxnet3",
};

static bool is_model(const char *k, size_t n)
{
    for (size_t i = 0; i < sizeof models / sizeof *models; i++)
        if (strlen(models[i]) == n && strncmp(models[i], k, n) == 0)
            return true;
    return false;
}

struct item {
    const char *k, *v;
    size_t kl, vl;
};

static int item_cmp(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    size_t n = x->kl < y->kl ? x->kl : y->kl;
    int c = strncmp(x->k, y->k, n);
    return c ? c : (x->kl > y->kl) - (x->kl < y->kl);
}

char *netconf_canonical(struct sim *s, const char *net, bool new_mac)
{
    struct item rest[NET_ITEMS];
    int nrest = 0;
    const char *model = NULL, *mac = NULL;
    size_t model_l = 0, mac_l = 0;
    for (const char *p = net; *p;) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        size_t kl = eq ? (size_t)(eq - p) : n;
        const char *v = eq ? eq + 1 : NULL;
        size_t vl = eq ? n - kl - 1 : 0;
        if (!eq) { /* the default key: the model */
            model = p, model_l = n;
        } else if (kl == 5 && strncmp(p, "model", 5) == 0) {
            model = v, model_l = vl;
        } else if (kl == 7 && strncmp(p, "macaddr", 7) == 0) {
            mac = v, mac_l = vl;
        } else if (is_model(p, kl)) {
            model = p, model_l = kl, mac = v, mac_l = vl;
        } else if (nrest < NET_ITEMS) {
            rest[nrest++] = (struct item){p, v, kl, vl};
        } else {
            return NULL;
        }
        p += n;
        if (*p)
            p++;
    }
    if (!model || !model_l)
        return NULL;
    char fresh[18];
    if (!mac || new_mac) {
        sim_new_mac(s, fresh);
        mac = fresh;
        mac_l = strlen(fresh);
    }
    qsort(rest, (size_t)nrest, sizeof *rest, item_cmp);
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    buf_printf(&b, "%.*s=%.*s", (int)model_l, model, (int)mac_l, mac);
    for (int i = 0; i < nrest; i++)
        buf_printf(&b, ",%.*s=%.*s", (int)rest[i].kl, rest[i].k, (int)rest[i].vl, rest[i].v);
    return buf_take(&b);
}
