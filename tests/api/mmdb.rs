//! Small GeoLite2-layout City and ASN databases written at test time.

use std::path::Path;

use ipnet::IpNet;
use mmdb_writer::Writer;
use serde_json::json;

/// (network, country ISO code, region, city)
pub type CityRow<'a> = (&'a str, &'a str, &'a str, &'a str);

pub fn write_city_db(path: &Path, rows: &[CityRow]) {
    let mut w = Writer::new("GeoLite2-City");
    for (net, country, region, city) in rows {
        let record = json!({
            "country": {"iso_code": country, "names": {"en": country}},
            "subdivisions": [{"iso_code": "X", "names": {"en": region}}],
            "city": {"geoname_id": 1, "names": {"en": city, "de": format!("{city} (de)")}},
        });
        w.insert(net.parse::<IpNet>().unwrap(), &record).unwrap();
    }
    write_atomically(path, &w.to_bytes().unwrap());
}

/// The GeoLite2-ASN record: the number is a uint32 as in MaxMind's files.
#[derive(serde::Serialize)]
struct AsnRecord<'a> {
    autonomous_system_number: u32,
    autonomous_system_organization: &'a str,
}

/// (network, ASN, organisation)
pub fn write_asn_db(path: &Path, rows: &[(&str, u32, &str)]) {
    let mut w = Writer::new("GeoLite2-ASN");
    for (net, asn, org) in rows {
        let record = AsnRecord {
            autonomous_system_number: *asn,
            autonomous_system_organization: org,
        };
        w.insert(net.parse::<IpNet>().unwrap(), &record).unwrap();
    }
    write_atomically(path, &w.to_bytes().unwrap());
}

/// Replaces `path` by rename, as operators (and geoipupdate) do.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
