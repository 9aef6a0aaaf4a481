//! GeoLite2-layout City and ASN databases of realistic size (≥ 100k networks
//! each), generated for benchmarks.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use mmdb_writer::Writer;
use serde::Serialize;

pub const NETWORKS: u32 = 120_000;

#[derive(Serialize)]
struct Names {
    en: String,
    de: String,
}

#[derive(Serialize)]
struct Place {
    geoname_id: u32,
    names: Names,
}

#[derive(Serialize)]
struct Country {
    iso_code: &'static str,
    names: Names,
}

#[derive(Serialize)]
struct CityRecord {
    city: Place,
    country: Country,
    subdivisions: Vec<Place>,
}

#[derive(Serialize)]
struct AsnRecord {
    autonomous_system_number: u32,
    autonomous_system_organization: String,
}

const COUNTRIES: [&str; 8] = ["AT", "DE", "US", "GB", "FR", "JP", "BR", "IN"];

/// The i-th /24 of the generated space (1.0.0.0 upwards, all public).
pub fn network(i: u32) -> Ipv4Net {
    let base = (1u32 << 24) + (i << 8);
    Ipv4Net::new(Ipv4Addr::from(base), 24).expect("/24 is valid")
}

/// An address inside the i-th network.
pub fn address(i: u32) -> Ipv4Addr {
    Ipv4Addr::from((1u32 << 24) + (i << 8) + 42)
}

fn names(s: String) -> Names {
    Names {
        de: format!("{s} (de)"),
        en: s,
    }
}

/// Writes `city.mmdb` and `asn.mmdb` into `dir`; returns their paths.
pub fn write_databases(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut city = Writer::new("GeoLite2-City");
    let mut asn = Writer::new("GeoLite2-ASN");
    for i in 0..NETWORKS {
        let net = IpNet::V4(network(i));
        let country = COUNTRIES[(i % 8) as usize];
        let record = CityRecord {
            city: Place {
                geoname_id: i,
                names: names(format!("City {}", i % 5000)),
            },
            country: Country {
                iso_code: country,
                names: names(country.to_owned()),
            },
            subdivisions: vec![Place {
                geoname_id: i % 300,
                names: names(format!("Region {}", i % 300)),
            }],
        };
        city.insert(net, &record).expect("city insert");
        let a = AsnRecord {
            autonomous_system_number: 1000 + i % 20_000,
            autonomous_system_organization: format!("Network Operator {}", i % 20_000),
        };
        asn.insert(net, &a).expect("asn insert");
    }
    let city_path = dir.join("city.mmdb");
    let asn_path = dir.join("asn.mmdb");
    std::fs::write(&city_path, city.to_bytes().expect("city bytes")).expect("write city");
    std::fs::write(&asn_path, asn.to_bytes().expect("asn bytes")).expect("write asn");
    (city_path, asn_path)
}
