# ruff: noqa: E501
"""Pinned files of the public Her2ST repository (Andersson et al., Nat. Commun. 2021).

Each entry: local relative path -> (sha256, upstream commit prefix key, upstream path). The sha256 values are
those of the files in the reference copy used to develop sthinge; a download whose hash differs is refused.
"""

from __future__ import annotations

REPO_URL = "https://github.com/almaan/her2st/raw"
COMMITS = {
    "e75e5c53a994": "e75e5c53a994726a8ad251aaf653a02d7932eb6a",
    "9f2260c6aa83": "9f2260c6aa8347996955d53f0a5f06ac14c93470",
}

FILES: dict[str, tuple[str, str, str]] = {
    "counts/A1.tsv.gz": (
        "d91035e5d8a9c4ce7865e4c61446deec1a7318602d41b3220e9fcb3ce7e41fe3",
        "e75e5c53a994",
        "data/ST-cnts/A1.tsv.gz",
    ),
    "counts/A2.tsv.gz": (
        "1c84f44bfc0bce6d5647b78e4598e2456f769e29f72ca52911d5bc4be81e410c",
        "e75e5c53a994",
        "data/ST-cnts/A2.tsv.gz",
    ),
    "counts/A3.tsv.gz": (
        "dd0107ff76b643d7b72330c7bfe282e2b27eb7dd58b77680b0e6bcbeae95852f",
        "e75e5c53a994",
        "data/ST-cnts/A3.tsv.gz",
    ),
    "counts/A4.tsv.gz": (
        "3283ba1bf1550b26119966fe06a844d815e7fc73c493943b936dd3d933c4c331",
        "e75e5c53a994",
        "data/ST-cnts/A4.tsv.gz",
    ),
    "counts/A5.tsv.gz": (
        "ff40c29d552391b3a4c4f37bb8c5cefce82e4dc64a277d4b80e2425405c59722",
        "e75e5c53a994",
        "data/ST-cnts/A5.tsv.gz",
    ),
    "counts/A6.tsv.gz": (
        "65b4f4d25b1afab5b6556c7a6aab2b8910562d03b173cebcf568ab7190695aec",
        "e75e5c53a994",
        "data/ST-cnts/A6.tsv.gz",
    ),
    "counts/B1.tsv.gz": (
        "97b3abf2676c596ac7dd53829780005724cab62a6f676697516006481a443f74",
        "e75e5c53a994",
        "data/ST-cnts/B1.tsv.gz",
    ),
    "counts/B2.tsv.gz": (
        "b43cef41e3164ffe4a3b43b6ed396f664d971451d3dc151dea4d91a09e84d95c",
        "e75e5c53a994",
        "data/ST-cnts/B2.tsv.gz",
    ),
    "counts/B3.tsv.gz": (
        "bd1fd03f33bdc14ca68a271525587d27b1e78323ea695413d274d6c388becf7a",
        "e75e5c53a994",
        "data/ST-cnts/B3.tsv.gz",
    ),
    "counts/B5.tsv.gz": (
        "05bdd1ea4234f62d5223f94a96d37f2f87b48e95062251560cdd676f5514948a",
        "e75e5c53a994",
        "data/ST-cnts/B5.tsv.gz",
    ),
    "counts/B6.tsv.gz": (
        "bfb2b4e5d99b6021c43f546a3e773c32f4f13a4b461cdd1684d364f9fe550e2b",
        "e75e5c53a994",
        "data/ST-cnts/B6.tsv.gz",
    ),
    "counts/C1.tsv.gz": (
        "8383130eebf0f9f8186f006ed6b704149ba62303605a312a9080fa9901be9c20",
        "e75e5c53a994",
        "data/ST-cnts/C1.tsv.gz",
    ),
    "counts/C2.tsv.gz": (
        "c1c59ea6cffae36b9ecb561b8e2a97e3aa5f4085f748e991a0e330ed9d09773d",
        "e75e5c53a994",
        "data/ST-cnts/C2.tsv.gz",
    ),
    "counts/C3.tsv.gz": (
        "e00c55a3eb9caac5d9c71b8906aae8be8b38f93e23938f4a0ebee17683ef6a2a",
        "e75e5c53a994",
        "data/ST-cnts/C3.tsv.gz",
    ),
    "counts/C4.tsv.gz": (
        "33201f76d41d7131dc600a0f87d9a70383af3503e81698b4d11e6f2e8d73e9da",
        "e75e5c53a994",
        "data/ST-cnts/C4.tsv.gz",
    ),
    "counts/C5.tsv.gz": (
        "c0f310315ca6110d74dbdf7011e5b42432ba0b8eb5f001824764911988f39338",
        "e75e5c53a994",
        "data/ST-cnts/C5.tsv.gz",
    ),
    "counts/C6.tsv.gz": (
        "60478b0d2411501866685f41312c65c6591e499d64d5b719be8ee9bab25c9bc8",
        "e75e5c53a994",
        "data/ST-cnts/C6.tsv.gz",
    ),
    "counts/D1.tsv.gz": (
        "8fe13d29763b3f6a9e85322dae97e05c4ca42b57cef4b1077c88b9b7b6a980ac",
        "e75e5c53a994",
        "data/ST-cnts/D1.tsv.gz",
    ),
    "counts/D2.tsv.gz": (
        "e63818ad8717b47ca949e082c1f28b9c807475b8d722a6f5c1acda7b618b5495",
        "e75e5c53a994",
        "data/ST-cnts/D2.tsv.gz",
    ),
    "counts/D3.tsv.gz": (
        "0bdfa82f3a2f4c659757cbd9f9b5734f9faabc44c4ee72094bf2b8609c86e01f",
        "e75e5c53a994",
        "data/ST-cnts/D3.tsv.gz",
    ),
    "counts/D4.tsv.gz": (
        "4da2a65ffdd6ce52993e4f68b3730326c00ce9304cf8aebaf125efe9997fb898",
        "e75e5c53a994",
        "data/ST-cnts/D4.tsv.gz",
    ),
    "counts/D5.tsv.gz": (
        "a1592e1742913cd37f2534153467752ded6eade730d5acdc227daad55c9e551f",
        "e75e5c53a994",
        "data/ST-cnts/D5.tsv.gz",
    ),
    "counts/D6.tsv.gz": (
        "3b9ab37e0cacf7956da1354c8c0ee2a7fc5e12be78ccb4d10578df36a6bf7271",
        "e75e5c53a994",
        "data/ST-cnts/D6.tsv.gz",
    ),
    "counts/E1.tsv.gz": (
        "b2f572ea0a95d256cb172a9284e96b6d2ff236398d4934a992df85c96d11c4cc",
        "e75e5c53a994",
        "data/ST-cnts/E1.tsv.gz",
    ),
    "counts/E2.tsv.gz": (
        "a725a87e1a74ef0c096d421664dd9100bf973e5768c28acfa9c17abb63677a95",
        "e75e5c53a994",
        "data/ST-cnts/E2.tsv.gz",
    ),
    "counts/E3.tsv.gz": (
        "8030d33e51c2831f7c758ed0374baa9f121d2e2dce6decd47228ff070c7f0ac4",
        "e75e5c53a994",
        "data/ST-cnts/E3.tsv.gz",
    ),
    "counts/F1.tsv.gz": (
        "187aa13f204d514851d3674dfa09b4a8d7f2676f1d40d2ef63e9e368c7cf672a",
        "e75e5c53a994",
        "data/ST-cnts/F1.tsv.gz",
    ),
    "counts/F2.tsv.gz": (
        "7de4ca7c3ccb923f4d636b21a4639284c66da9d97a93e1ab6712b3c453229c04",
        "e75e5c53a994",
        "data/ST-cnts/F2.tsv.gz",
    ),
    "counts/F3.tsv.gz": (
        "6b7eb2d7ff8c6a8826cfba304de2d3b87bb8e30f68d050b83007de9888546743",
        "e75e5c53a994",
        "data/ST-cnts/F3.tsv.gz",
    ),
    "counts/G1.tsv.gz": (
        "396153436dfc39e199bdc01447b3f8929aef598d7064c0c24a33da00f54570ea",
        "e75e5c53a994",
        "data/ST-cnts/G1.tsv.gz",
    ),
    "counts/G2.tsv.gz": (
        "9d51a5ed85bdf60069dcf51beeffba4e90e35e8630ec3b707a2453ffdd608e3b",
        "e75e5c53a994",
        "data/ST-cnts/G2.tsv.gz",
    ),
    "counts/G3.tsv.gz": (
        "9fd3c8efb94239b567157860224a33417d798a65d3a28fb9982651795cb2259e",
        "e75e5c53a994",
        "data/ST-cnts/G3.tsv.gz",
    ),
    "counts/H1.tsv.gz": (
        "90b391782535f38c9ab20fe8b38f44ebbfdad2201075a677a198cbef12c29b07",
        "e75e5c53a994",
        "data/ST-cnts/H1.tsv.gz",
    ),
    "counts/H2.tsv.gz": (
        "e839f271f2cde0ccf8f43f4358133f066be5d75d982839eba75abd7967486a34",
        "e75e5c53a994",
        "data/ST-cnts/H2.tsv.gz",
    ),
    "counts/H3.tsv.gz": (
        "5771d4793f4e1377ed066f27cdbc703d3317c81b7dd5323a175d2227c7e3ae1d",
        "e75e5c53a994",
        "data/ST-cnts/H3.tsv.gz",
    ),
    "spots/A1_selection.tsv": (
        "e5f79223be2ea2aebb082c4759059ab7079b0132052d0944209048ac57788c5d",
        "9f2260c6aa83",
        "data/ST-spotfiles/A1_selection.tsv",
    ),
    "spots/A2_selection.tsv": (
        "b21f48c8492ff1d71c0d0d396dbde64735ff8fa5419bcc6f5cffe60f68d7cb09",
        "9f2260c6aa83",
        "data/ST-spotfiles/A2_selection.tsv",
    ),
    "spots/A3_selection.tsv": (
        "09a5434745c4ce3c6859f3af00ea414a4b947685977e97f24595e77d1a0ff78e",
        "9f2260c6aa83",
        "data/ST-spotfiles/A3_selection.tsv",
    ),
    "spots/A4_selection.tsv": (
        "d1e41fb1d50ea04b55743f3c67104bdde46e1aea6a086e6cfdaf5109da0d2e02",
        "9f2260c6aa83",
        "data/ST-spotfiles/A4_selection.tsv",
    ),
    "spots/A5_selection.tsv": (
        "1237571fecfa2809292eeb7c7ee6b7da220a516121b94a71802cbbc971dc0daa",
        "9f2260c6aa83",
        "data/ST-spotfiles/A5_selection.tsv",
    ),
    "spots/A6_selection.tsv": (
        "d771bdc9dcb386cce0e628339c9ff94e5392fff191790b31aba4d73ff44b7554",
        "9f2260c6aa83",
        "data/ST-spotfiles/A6_selection.tsv",
    ),
    "spots/B1_selection.tsv": (
        "7ea9963677db80199db928d763b0b34ea1015fb7452e85ac7b21d42ee15c3875",
        "9f2260c6aa83",
        "data/ST-spotfiles/B1_selection.tsv",
    ),
    "spots/B2_selection.tsv": (
        "963e3f0b0e6eb17586788f2228dbd829ca7d13eb0211bf8b1a5685d3a33b8153",
        "9f2260c6aa83",
        "data/ST-spotfiles/B2_selection.tsv",
    ),
    "spots/B3_selection.tsv": (
        "23b07cc9e5142802915cefedb7a8259766b58544fa7a2ac3eda21feaa267b9c9",
        "9f2260c6aa83",
        "data/ST-spotfiles/B3_selection.tsv",
    ),
    "spots/B5_selection.tsv": (
        "dc206c6e6448e81ba55d01f16fa862d07f5f7087fe16772eab919355e43cd1a7",
        "9f2260c6aa83",
        "data/ST-spotfiles/B5_selection.tsv",
    ),
    "spots/B6_selection.tsv": (
        "63b90d6283071d2db43d5486eeba0e76091998e64fa8c4a95b4501086c8aff33",
        "9f2260c6aa83",
        "data/ST-spotfiles/B6_selection.tsv",
    ),
    "spots/C1_selection.tsv": (
        "9a5187c98d2c312064057d3bad192d4a19105b5135ff2b68f5e4547cade0954d",
        "9f2260c6aa83",
        "data/ST-spotfiles/C1_selection.tsv",
    ),
    "spots/C2_selection.tsv": (
        "235b5f4306b3b57c628ffc82c98c7109602474fbcc79a917b9c50517f99b6b1c",
        "9f2260c6aa83",
        "data/ST-spotfiles/C2_selection.tsv",
    ),
    "spots/C3_selection.tsv": (
        "7fd76c13370b7804ac3bb377b846d22485cf9223f9dd8dfc25be06e5aaf65755",
        "9f2260c6aa83",
        "data/ST-spotfiles/C3_selection.tsv",
    ),
    "spots/C4_selection.tsv": (
        "47e79f3b9dbfa3a8c18af9e948ba7ba4bf0a75ea1b4c292bc714ced7d0917d4c",
        "9f2260c6aa83",
        "data/ST-spotfiles/C4_selection.tsv",
    ),
    "spots/C5_selection.tsv": (
        "2114cc3b4da759772112897f1e247d5443c9f8c808e6a9a952eb4fda379a194c",
        "9f2260c6aa83",
        "data/ST-spotfiles/C5_selection.tsv",
    ),
    "spots/C6_selection.tsv": (
        "efdbbc6759c6af43baa966505c31705f09c087c1dccf1ea3e0d1db7b55717117",
        "9f2260c6aa83",
        "data/ST-spotfiles/C6_selection.tsv",
    ),
    "spots/D1_selection.tsv": (
        "7ba7843b52ddc2b147ee968fe9466a5d1fa0d884b51def292ce340d88da034eb",
        "9f2260c6aa83",
        "data/ST-spotfiles/D1_selection.tsv",
    ),
    "spots/D2_selection.tsv": (
        "5e0cadc230094060d071124cfb5ab6223d3dbb56b6aa6c3e4f8f9c8f1e329fb5",
        "9f2260c6aa83",
        "data/ST-spotfiles/D2_selection.tsv",
    ),
    "spots/D3_selection.tsv": (
        "e820564d7720c1fbc9910f5440368a43a2b862d617a9c107582ddb706af61a3b",
        "9f2260c6aa83",
        "data/ST-spotfiles/D3_selection.tsv",
    ),
    "spots/D4_selection.tsv": (
        "82e12ff5f14a9564fd0aa9755243e4412e6786fdb559210cef9c3c6ff35a05b0",
        "9f2260c6aa83",
        "data/ST-spotfiles/D4_selection.tsv",
    ),
    "spots/D5_selection.tsv": (
        "f19eebb34f6a031fe766715d7f97a7682e201f30097fd0fa15ebf8f34ff95853",
        "9f2260c6aa83",
        "data/ST-spotfiles/D5_selection.tsv",
    ),
    "spots/D6_selection.tsv": (
        "82d80015e0e789bbbfe2d6ea033da43207a1803666a0ec5b162db380b3cc1cb7",
        "9f2260c6aa83",
        "data/ST-spotfiles/D6_selection.tsv",
    ),
    "spots/E1_selection.tsv": (
        "a979c36f6310fff965c96f05ad290ca322d88e400b5aed2a1139fdd6f0e2da92",
        "9f2260c6aa83",
        "data/ST-spotfiles/E1_selection.tsv",
    ),
    "spots/E2_selection.tsv": (
        "1beeac4b7a45e432eb4d9c34460e7a2a3342f77e0bb6dcffae66ae31b1584444",
        "9f2260c6aa83",
        "data/ST-spotfiles/E2_selection.tsv",
    ),
    "spots/E3_selection.tsv": (
        "f0fe37cfb98e3757587d0d43d45fc734b3627d336ccab4da179548b86c5c1d9c",
        "9f2260c6aa83",
        "data/ST-spotfiles/E3_selection.tsv",
    ),
    "spots/F1_selection.tsv": (
        "cf479a5812c317541c7f7d6a4ebf1bfd93b0a1ab3eef35a8da15b9e76164f2f4",
        "9f2260c6aa83",
        "data/ST-spotfiles/F1_selection.tsv",
    ),
    "spots/F2_selection.tsv": (
        "3a9149a67b05971dfb27edb2261d9ffd2443543021356b0d46f26d8237c1a20d",
        "9f2260c6aa83",
        "data/ST-spotfiles/F2_selection.tsv",
    ),
    "spots/F3_selection.tsv": (
        "106ba9b275b29fd745116b8961a1a0bb39ec41d9d0433932d6b129f98a46c093",
        "9f2260c6aa83",
        "data/ST-spotfiles/F3_selection.tsv",
    ),
    "spots/G1_selection.tsv": (
        "0e2f630e09a7c0e1869918c0c9afebcff36b86006a6809533fb09405c831a01d",
        "9f2260c6aa83",
        "data/ST-spotfiles/G1_selection.tsv",
    ),
    "spots/G2_selection.tsv": (
        "abae30bb6f434cb2aae34b8ef56da6b613c840d48c49279d55f4600ad496245c",
        "9f2260c6aa83",
        "data/ST-spotfiles/G2_selection.tsv",
    ),
    "spots/G3_selection.tsv": (
        "6f258aa6b4d432d29f0b7ba4a9be64ac7e58fbc430523a41e4eb5bdf13127272",
        "9f2260c6aa83",
        "data/ST-spotfiles/G3_selection.tsv",
    ),
    "spots/H1_selection.tsv": (
        "fc9cc5bad3a1e26e48f435696259df38b500042a9565486c15fd37ab7d8f9ed6",
        "9f2260c6aa83",
        "data/ST-spotfiles/H1_selection.tsv",
    ),
    "spots/H2_selection.tsv": (
        "c38d3ade8b5674633097b23a66a554831193cee48ba54a7d7418291a9f5533f9",
        "9f2260c6aa83",
        "data/ST-spotfiles/H2_selection.tsv",
    ),
    "spots/H3_selection.tsv": (
        "430da6f95105eb660f4e8b9b688d44d0d28b3ff66fee3e201cc160ee5739a28c",
        "9f2260c6aa83",
        "data/ST-spotfiles/H3_selection.tsv",
    ),
    "images/C2.jpg": (
        "26e2f73ae840cdd46c5bba405aae181f13a56a376b9848dff23f7a9c5de7f19e",
        "9f2260c6aa83",
        "data/ST-imgs/C/C2/5714_HE_BT_C2.jpg",
    ),
    "images/C3.jpg": (
        "0005a92674014d473040a28f0afca89ce5fa5c44019b479b638ceb3272ceb568",
        "9f2260c6aa83",
        "data/ST-imgs/C/C3/5714_HE_BT_D1.jpg",
    ),
    "images/C4.jpg": (
        "f40607eb1d5f0d125decd71c48b0c5d29cf6776ad92297fd185631208c82d6f2",
        "9f2260c6aa83",
        "data/ST-imgs/C/C4/5714_HE_BT_D2.jpg",
    ),
    "images/C5.jpg": (
        "34028ea41e376396b50c42b0a11a7e689c85be4a8022e668d0a09cc128c04c65",
        "9f2260c6aa83",
        "data/ST-imgs/C/C5/5714_HE_BT_E1.jpg",
    ),
    "images/C6.jpg": (
        "dddd87232589648861a9b6776dc1749be8306213f6589aeef0e805fb2b1ee263",
        "9f2260c6aa83",
        "data/ST-imgs/C/C6/5714_HE_BT_E2.jpg",
    ),
    "labels/A1_labeled_coordinates.tsv": (
        "23a0a68dccd54a8397ea4066994edb7110e88373d5b3bc6e35254dda9253fa5f",
        "9f2260c6aa83",
        "data/ST-pat/lbl/A1_labeled_coordinates.tsv",
    ),
    "labels/B1_labeled_coordinates.tsv": (
        "f7050caa71c47a4c95fcca2a7f29560d387310877b1c9e4a54f841059db837ee",
        "9f2260c6aa83",
        "data/ST-pat/lbl/B1_labeled_coordinates.tsv",
    ),
    "labels/C1_labeled_coordinates.tsv": (
        "41b6e1bbb1031480d969e725e739971cb39dbdb6e2b6d662d585bebacf093040",
        "9f2260c6aa83",
        "data/ST-pat/lbl/C1_labeled_coordinates.tsv",
    ),
    "labels/D1_labeled_coordinates.tsv": (
        "c8bf26103d1aac42611d9c85ba3db9c596b9a80ec045ca9b246b8d14d8b3c20f",
        "9f2260c6aa83",
        "data/ST-pat/lbl/D1_labeled_coordinates.tsv",
    ),
    "labels/E1_labeled_coordinates.tsv": (
        "29db60fe5b306bb982fbd2bbdd1f9c60eedf90c6ac1d56bedd3c18ed5a369829",
        "9f2260c6aa83",
        "data/ST-pat/lbl/E1_labeled_coordinates.tsv",
    ),
    "labels/F1_labeled_coordinates.tsv": (
        "3b59970f0c6ba09d8e0fc9286ace2a295bf06d36c59684162b7a8aca0e021ec5",
        "9f2260c6aa83",
        "data/ST-pat/lbl/F1_labeled_coordinates.tsv",
    ),
    "labels/G2_labeled_coordinates.tsv": (
        "8466275647ad125569ee94d099cc7b78c15028968ba1dd267a85a81c001a16ff",
        "9f2260c6aa83",
        "data/ST-pat/lbl/G2_labeled_coordinates.tsv",
    ),
    "labels/H1_labeled_coordinates.tsv": (
        "b65cbc99ed7a01281bc2eb87be87b902312e47ca91bc1f00ff351489b78434c3",
        "9f2260c6aa83",
        "data/ST-pat/lbl/H1_labeled_coordinates.tsv",
    ),
    "labels/J1_labeled_coordinates.tsv": (
        "36fa0cdccfd07ca4f77940481f893a6a8b92762bc27abd891cc246fdf2beece1",
        "9f2260c6aa83",
        "data/ST-pat/lbl/J1_labeled_coordinates.tsv",
    ),
}


def url(relpath: str) -> str:
    """Return the download URL of a registry entry."""
    _, commit, upstream = FILES[relpath]
    return f"{REPO_URL}/{COMMITS[commit]}/{upstream}"
