/*
 * Stand-in for Huawei's DCMI library (libdcmi.so) on an emulated Ascend node.
 *
 * Why: GPUStack 2.x workers find Ascend NPUs only through DCMI, loaded with
 * ctypes by gpustack-runtime (gpustack_runtime/detector/pydcmi/__init__.py,
 * used by detector/ascend.py); npu-smi output and /dev/davinci* are not read.
 * This library exports the V1 calls that detector makes, with the argument
 * and struct layouts pydcmi declares (as dcmi_interface_api.h does), and
 * answers from the node's facts instead of a driver.
 *
 * The facts come from a plain text file the emulator writes from the node's
 * node.json (emulator/gpustack.py, dcmi_facts()), one "key value..." per line:
 *
 *   npu_count 8
 *   chip_name 910B3
 *   hbm_mb 65536
 *   driver_version 24.1.rc3
 *   node_index 0
 *   device 0 0000:C1:00.0 198.19.0.1 255.255.0.0 198.19.0.254
 *
 * Path: $ASCEMU_DCMI_FACTS, default /run/ascemu/dcmi.facts. Without it
 * dcmi_init fails with DCMI_ERROR_DEVICE_NOT_EXIST (-8008), as a host with
 * the library but no working driver does.
 *
 * Layout as on an Atlas 800T A2: 8 cards with one NPU each, card id = logic
 * id = physical id = the device number (npu-smi's "NPU" column). No V2
 * (dcmiv2_*) symbols: pydcmi then stays on the V1 API, as on a 910B host.
 * Readings (power, temperature, HBM used) are the idle values npu-smi's
 * stand-in prints (emulator/standins/ascend_tools.py).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#define DCMI_OK 0
#define DCMI_ERROR_INVALID_PARAMETER (-8001)
#define DCMI_ERROR_INVALID_DEVICE_ID (-8007)
#define DCMI_ERROR_DEVICE_NOT_EXIST (-8008)
#define DCMI_ERROR_NOT_SUPPORT (-8255)
#define DCMI_ERROR_UNINITIALIZED (-99997)

#define MAX_DEVICES 16
#define MAX_CHIP_NAME_LEN 32
#define DIE_ID_COUNT 5
#define DCMI_TOPO_TYPE_SELF 0
#define DCMI_TOPO_TYPE_HCCS 3

struct dcmi_chip_info {
    unsigned char chip_type[MAX_CHIP_NAME_LEN];
    unsigned char chip_name[MAX_CHIP_NAME_LEN];
    unsigned char chip_ver[MAX_CHIP_NAME_LEN];
    unsigned int aicore_cnt;
};

struct dcmi_pcie_info {
    unsigned int deviceid, venderid, subvenderid, subdeviceid;
    unsigned int bdf_deviceid, bdf_busid, bdf_funcid;
};

struct dcmi_pcie_info_all {
    unsigned int venderid, subvenderid, deviceid, subdeviceid;
    int domain;
    unsigned int bdf_busid, bdf_deviceid, bdf_funcid;
    unsigned char reserve[32];
};

struct dcmi_die_id { unsigned int soc_die[DIE_ID_COUNT]; };

struct dcmi_ecc_info {
    int enable_flag;
    unsigned int single_bit_error_cnt, double_bit_error_cnt;
    unsigned int total_single_bit_error_cnt, total_double_bit_error_cnt;
    unsigned int single_bit_isolated_pages_cnt, double_bit_isolated_pages_cnt;
    unsigned int single_bit_next_isolated_pages_cnt, double_bit_next_isolated_pages_cnt;
};

struct dcmi_hbm_info {
    unsigned long long memory_size;
    unsigned int freq;
    unsigned long long memory_usage;
    int temp;
    unsigned int bandwith_util_rate;
};

struct dcmi_ip_addr {
    union { unsigned char ip6[16]; unsigned char ip4[4]; } u_addr;
    unsigned int ip_type; /* 0 = IPv4 */
};

struct device_facts {
    int present;
    unsigned int domain, bus, dev, func;
    char ip[64], mask[64], gateway[64];
};

static struct {
    int loaded;
    int npu_count;
    int node_index;
    unsigned long long hbm_mb;
    char chip_name[MAX_CHIP_NAME_LEN];
    char driver_version[64];
    struct device_facts dev[MAX_DEVICES];
} facts;

static const int temperature[8] = {36, 37, 35, 38, 36, 39, 35, 37};
static const int power_dw[8] = {965, 987, 942, 915, 966, 960, 975, 938}; /* 0.1 W */
static const unsigned long long hbm_used_mb[8] = {3347, 3350, 3347, 3351, 3347, 3350, 3347, 3347};

static int load_facts(void)
{
    const char *path = getenv("ASCEMU_DCMI_FACTS");
    char line[512], key[64];
    FILE *f;

    memset(&facts, 0, sizeof(facts));
    f = fopen(path && *path ? path : "/run/ascemu/dcmi.facts", "r");
    if (!f)
        return DCMI_ERROR_DEVICE_NOT_EXIST;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%63s", key) != 1)
            continue;
        if (!strcmp(key, "npu_count"))
            sscanf(line, "%*s %d", &facts.npu_count);
        else if (!strcmp(key, "node_index"))
            sscanf(line, "%*s %d", &facts.node_index);
        else if (!strcmp(key, "hbm_mb"))
            sscanf(line, "%*s %llu", &facts.hbm_mb);
        else if (!strcmp(key, "chip_name"))
            sscanf(line, "%*s %31s", facts.chip_name);
        else if (!strcmp(key, "driver_version"))
            sscanf(line, "%*s %63s", facts.driver_version);
        else if (!strcmp(key, "device")) {
            int i;
            struct device_facts d;
            memset(&d, 0, sizeof(d));
            if (sscanf(line, "%*s %d %x:%x:%x.%x %63s %63s %63s", &i, &d.domain, &d.bus, &d.dev, &d.func,
                       d.ip, d.mask, d.gateway) == 8 && i >= 0 && i < MAX_DEVICES) {
                d.present = 1;
                facts.dev[i] = d;
            }
        }
    }
    fclose(f);
    if (facts.npu_count <= 0 || facts.npu_count > MAX_DEVICES)
        return DCMI_ERROR_DEVICE_NOT_EXIST;
    facts.loaded = 1;
    return DCMI_OK;
}

/* card id = device number; one NPU (device 0) per card */
static int check(int card_id, int device_id)
{
    if (!facts.loaded)
        return DCMI_ERROR_UNINITIALIZED;
    if (card_id < 0 || card_id >= facts.npu_count || !facts.dev[card_id].present)
        return DCMI_ERROR_INVALID_DEVICE_ID;
    if (device_id != 0)
        return DCMI_ERROR_INVALID_DEVICE_ID;
    return DCMI_OK;
}

static void copy_str(char *out, unsigned int len, const char *value)
{
    if (len == 0)
        return;
    snprintf(out, len, "%s", value);
}

static int to_ip(struct dcmi_ip_addr *out, const char *text)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, text, out->u_addr.ip4) != 1)
        return DCMI_ERROR_NOT_SUPPORT;
    out->ip_type = 0;
    return DCMI_OK;
}

int dcmi_init(void) { return load_facts(); }

int dcmi_get_dcmi_version(char *buf, unsigned int len)
{
    if (!buf)
        return DCMI_ERROR_INVALID_PARAMETER;
    copy_str(buf, len, facts.loaded ? facts.driver_version : "");
    return DCMI_OK;
}

int dcmi_get_driver_version(char *buf, unsigned int len)
{
    if (!facts.loaded)
        return DCMI_ERROR_UNINITIALIZED;
    if (!buf)
        return DCMI_ERROR_INVALID_PARAMETER;
    copy_str(buf, len, facts.driver_version);
    return DCMI_OK;
}

int dcmi_get_card_list(int *card_num, int *card_list, int list_len)
{
    int n = 0;
    if (!facts.loaded)
        return DCMI_ERROR_UNINITIALIZED;
    if (!card_num || !card_list)
        return DCMI_ERROR_INVALID_PARAMETER;
    for (int i = 0; i < facts.npu_count && n < list_len; i++)
        if (facts.dev[i].present)
            card_list[n++] = i;
    *card_num = n;
    return DCMI_OK;
}

int dcmi_get_device_num_in_card(int card_id, int *device_num)
{
    int rc = check(card_id, 0);
    if (rc)
        return rc;
    *device_num = 1;
    return DCMI_OK;
}

int dcmi_get_device_type(int card_id, int device_id, unsigned int *device_type)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    *device_type = 0; /* DCMI_UNIT_TYPE_NPU */
    return DCMI_OK;
}

int dcmi_get_device_chip_info(int card_id, int device_id, struct dcmi_chip_info *info)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    memset(info, 0, sizeof(*info));
    copy_str((char *)info->chip_type, MAX_CHIP_NAME_LEN, "Ascend");
    copy_str((char *)info->chip_name, MAX_CHIP_NAME_LEN, facts.chip_name);
    copy_str((char *)info->chip_ver, MAX_CHIP_NAME_LEN, "V1");
    info->aicore_cnt = 20; /* npu-smi info -t common: "Aicore Count : 20" on 910B3 */
    return DCMI_OK;
}

int dcmi_get_device_hbm_info(int card_id, int device_id, struct dcmi_hbm_info *info)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    memset(info, 0, sizeof(*info));
    info->memory_size = facts.hbm_mb; /* MB, as npu-smi's HBM-Usage(MB) */
    info->freq = 1600;
    info->memory_usage = hbm_used_mb[card_id % 8];
    info->temp = temperature[card_id % 8];
    return DCMI_OK;
}

int dcmi_get_device_logic_id(unsigned int *logic_id, int card_id, int device_id)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    *logic_id = (unsigned int)card_id;
    return DCMI_OK;
}

int dcmi_get_device_phyid_from_logicid(unsigned int logic_id, unsigned int *phy_id)
{
    int rc = check((int)logic_id, 0);
    if (rc)
        return rc;
    *phy_id = logic_id;
    return DCMI_OK;
}

int dcmi_get_device_pcie_info(int card_id, int device_id, struct dcmi_pcie_info *info)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    memset(info, 0, sizeof(*info));
    info->deviceid = 0xd802; /* Ascend 910B */
    info->venderid = 0x19e5; /* Huawei */
    info->subvenderid = 0x0200;
    info->subdeviceid = 0x0100;
    info->bdf_busid = facts.dev[card_id].bus;
    info->bdf_deviceid = facts.dev[card_id].dev;
    info->bdf_funcid = facts.dev[card_id].func;
    return DCMI_OK;
}

int dcmi_get_device_pcie_info_v2(int card_id, int device_id, struct dcmi_pcie_info_all *info)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    memset(info, 0, sizeof(*info));
    info->venderid = 0x19e5;
    info->subvenderid = 0x0200;
    info->deviceid = 0xd802;
    info->subdeviceid = 0x0100;
    info->domain = (int)facts.dev[card_id].domain;
    info->bdf_busid = facts.dev[card_id].bus;
    info->bdf_deviceid = facts.dev[card_id].dev;
    info->bdf_funcid = facts.dev[card_id].func;
    return DCMI_OK;
}

/* Unique per node and device, as a real die id is per chip: GPUStack keys devices by it. */
static void die_id(int card_id, struct dcmi_die_id *die)
{
    die->soc_die[0] = 0x3a5c0000u + (unsigned int)facts.node_index;
    die->soc_die[1] = 0x910b0000u + (unsigned int)card_id;
    die->soc_die[2] = 0x00a5c3e1u;
    die->soc_die[3] = (unsigned int)facts.node_index;
    die->soc_die[4] = (unsigned int)card_id;
}

int dcmi_get_device_die(int card_id, int device_id, struct dcmi_die_id *die)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    die_id(card_id, die);
    return DCMI_OK;
}

int dcmi_get_device_die_v2(int card_id, int device_id, int die_type, struct dcmi_die_id *die)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    if (die_type != 1) /* only the VDIE (SoC die) on a 910B */
        return DCMI_ERROR_NOT_SUPPORT;
    die_id(card_id, die);
    return DCMI_OK;
}

int dcmi_get_device_ip(int card_id, int device_id, int port_type, int port_id,
                       struct dcmi_ip_addr *ip, struct dcmi_ip_addr *mask)
{
    int rc = check(card_id, device_id);
    (void)port_id;
    if (rc)
        return rc;
    if (port_type != 1) /* DCMI_PORT_TYPE_ROCE_PORT: the NPU's RoCE NIC (hccn_tool -ip -g) */
        return DCMI_ERROR_NOT_SUPPORT;
    rc = to_ip(ip, facts.dev[card_id].ip);
    return rc ? rc : to_ip(mask, facts.dev[card_id].mask);
}

int dcmi_get_device_gateway(int card_id, int device_id, int port_type, int port_id, struct dcmi_ip_addr *gateway)
{
    int rc = check(card_id, device_id);
    (void)port_id;
    if (rc)
        return rc;
    if (port_type != 1)
        return DCMI_ERROR_NOT_SUPPORT;
    return to_ip(gateway, facts.dev[card_id].gateway);
}

int dcmi_get_device_utilization_rate(int card_id, int device_id, int input_type, unsigned int *rate)
{
    int rc = check(card_id, device_id);
    (void)input_type;
    if (rc)
        return rc;
    *rate = 0; /* idle: no model ever runs on an emulated NPU */
    return DCMI_OK;
}

int dcmi_get_device_temperature(int card_id, int device_id, int *temp)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    *temp = temperature[card_id % 8];
    return DCMI_OK;
}

int dcmi_get_device_power_info(int card_id, int device_id, int *power)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    *power = power_dw[card_id % 8];
    return DCMI_OK;
}

int dcmi_get_device_health(int card_id, int device_id, unsigned int *health)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    *health = 0; /* OK */
    return DCMI_OK;
}

int dcmi_get_device_ecc_info(int card_id, int device_id, int device_type, struct dcmi_ecc_info *info)
{
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    if (device_type != 2) /* HBM only; a 910B has no DDR ECC to report */
        return DCMI_ERROR_NOT_SUPPORT;
    memset(info, 0, sizeof(*info));
    info->enable_flag = 1;
    return DCMI_OK;
}

int dcmi_get_topo_info_by_device_id(int card_id1, int device_id1, int card_id2, int device_id2, int *topo)
{
    int rc = check(card_id1, device_id1);
    if (rc || (rc = check(card_id2, device_id2)))
        return rc;
    /* the 8 NPUs of an Atlas 800T A2 are a full HCCS mesh */
    *topo = card_id1 == card_id2 ? DCMI_TOPO_TYPE_SELF : DCMI_TOPO_TYPE_HCCS;
    return DCMI_OK;
}

int dcmi_get_affinity_cpu_info_by_device_id(int card_id, int device_id, char *cpu_info, int *len)
{
    char text[32];
    long cpus = sysconf(_SC_NPROCESSORS_CONF);
    int rc = check(card_id, device_id);
    if (rc)
        return rc;
    /* one NUMA node here: every CPU of the machine */
    snprintf(text, sizeof(text), "0-%ld", cpus > 1 ? cpus - 1 : 0);
    copy_str(cpu_info, 32, text); /* pydcmi's buffer is TOPO_INFO_MAX_LENGTH = 32 */
    *len = (int)strlen(cpu_info);
    return DCMI_OK;
}
